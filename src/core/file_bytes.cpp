#include "core/file_bytes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace adamas {

FileBytes FileBytes::map(const std::string& path) {
  FileBytes f;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ADAMAS_CHECK(fd >= 0, ErrorKind::io, "cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::io, "{} is not a regular file", path);
  }
  f.size_ = uint64_t(st.st_size);
  if (f.size_ > 0) {
    void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    ADAMAS_CHECK(p != MAP_FAILED, ErrorKind::io, "cannot map {} ({} bytes): {}", path, f.size_, std::strerror(err));
    f.mapping_ = p;
    f.data_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  return f;
}

FileBytes FileBytes::copy(std::span<const uint8_t> bytes) {
  FileBytes f;
  f.size_ = bytes.size();
  f.owned_ = std::make_unique<uint8_t[]>(std::max<size_t>(bytes.size(), 1));  // never a null data pointer
  if (!bytes.empty()) std::memcpy(f.owned_.get(), bytes.data(), bytes.size());
  f.data_ = f.owned_.get();
  return f;
}

FileBytes::FileBytes(FileBytes&& o) noexcept { *this = std::move(o); }

FileBytes& FileBytes::operator=(FileBytes&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_, size_ = o.size_, mapping_ = o.mapping_;
    owned_ = std::move(o.owned_);
    o.data_ = nullptr, o.size_ = 0, o.mapping_ = nullptr;
  }
  return *this;
}

FileBytes::~FileBytes() { release(); }

void FileBytes::release() noexcept {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
  mapping_ = nullptr;
  data_ = nullptr;
  owned_.reset();
}

}  // namespace adamas
