// A free list of per-call resources (host scratch buffers, OpenVINO infer requests) for backends
// whose run() may be called from several threads at once: each call leases one, made on first
// need and reused afterwards, so steady-state frames allocate nothing and concurrent calls never
// share one. Internal header (not installed).
#ifndef NAF_RUNTIMES_POOL_H_
#define NAF_RUNTIMES_POOL_H_

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace naf {
namespace detail {

template <typename T>
class Pool {
 public:
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<T> item) : pool_(pool), item_(std::move(item)) {}
    Lease(Lease&&) = default;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (item_) pool_->give_back(std::move(item_));
    }
    T& operator*() const { return *item_; }
    T* operator->() const { return item_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<T> item_;
  };

  // Leases a free item, or one made by `make()` (returning std::unique_ptr<T>) when none is free.
  template <typename Make>
  Lease acquire(Make make) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!free_.empty()) {
        std::unique_ptr<T> item = std::move(free_.back());
        free_.pop_back();
        return Lease(this, std::move(item));
      }
    }
    return Lease(this, make());
  }

 private:
  void give_back(std::unique_ptr<T> item) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(std::move(item));
  }

  std::mutex mutex_;
  std::vector<std::unique_ptr<T>> free_;
};

}  // namespace detail
}  // namespace naf

#endif  // NAF_RUNTIMES_POOL_H_
