/* A statically linked program, for `secmem run`'s warning. */
int main(void) { return 0; }
