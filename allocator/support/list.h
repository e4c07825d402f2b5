// An intrusive doubly linked list: the links live in the element (a member of
// type ListLinks<T>), so linking never allocates. Not thread-safe: the owner
// of the list serialises access (the heap lock).
#pragma once

namespace secmem {

template <typename T> struct ListLinks {
  T *next = nullptr;
  T *prev = nullptr;
};

template <typename T, ListLinks<T> T::*Links> class IntrusiveList {
public:
  T *front() const { return head_; }
  bool empty() const { return head_ == nullptr; }
  static T *next(const T *item) { return (item->*Links).next; }

  void push_front(T *item) { insert_after(nullptr, item); }

  // Links item after pos (nullptr: at the front).
  void insert_after(T *pos, T *item) {
    ListLinks<T> &links = item->*Links;
    T *following = pos == nullptr ? head_ : (pos->*Links).next;
    links.prev = pos;
    links.next = following;
    if (following != nullptr) (following->*Links).prev = item;
    if (pos == nullptr)
      head_ = item;
    else
      (pos->*Links).next = item;
  }

  // Unlinks item, which must be in this list.
  void remove(T *item) {
    ListLinks<T> &links = item->*Links;
    if (links.prev != nullptr)
      (links.prev->*Links).next = links.next;
    else
      head_ = links.next;
    if (links.next != nullptr) (links.next->*Links).prev = links.prev;
    links.next = links.prev = nullptr;
  }

private:
  T *head_ = nullptr;
};

} // namespace secmem
