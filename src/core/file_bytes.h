// The bytes of a file, read-only: mapped from disk (mmap, released on destruction) or a private copy of bytes in
// memory. Move-only; the address of the bytes never changes, so pointers into them survive moves of the owner.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace adamas {

class FileBytes {
 public:
  FileBytes() = default;
  // Error(io) naming the path when it cannot be opened, is not a regular file, or cannot be mapped.
  static FileBytes map(const std::string& path);
  static FileBytes copy(std::span<const uint8_t> bytes);

  FileBytes(FileBytes&& o) noexcept;
  FileBytes& operator=(FileBytes&& o) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  void release() noexcept;

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;           // the mmap'ed region, or nullptr
  std::unique_ptr<uint8_t[]> owned_;  // the copy made by copy()
};

}  // namespace adamas
