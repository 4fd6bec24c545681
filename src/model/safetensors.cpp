#include "model/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.h"

static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

namespace adamas {
namespace {

using json = nlohmann::json;

constexpr int kMaxDims = 8;

// dtypes of the format that this build does not serve (named in the unsupported error).
constexpr std::string_view kKnownDtypes[] = {"F64", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL",
                                             "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ADAMAS_CHECK(in.good(), ErrorKind::io, "{}: cannot open: {}", path, std::strerror(errno));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ADAMAS_CHECK(!in.bad(), ErrorKind::io, "{}: read error", path);
  return s;
}

// A JSON value as a non-negative int64 (integers only), else Error(format).
int64_t nonneg_int(const json& v, const std::string& source, std::string_view tensor, std::string_view what) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ADAMAS_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), ErrorKind::format,
                 "{}: tensor '{}': {} value {} is too large", source, tensor, what, u);
    return int64_t(u);
  }
  ADAMAS_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, ErrorKind::format,
               "{}: tensor '{}': {} must hold non-negative integers, found {}", source, tensor, what, v.dump());
  return v.get<int64_t>();
}

}  // namespace

float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7F800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(u);
}

float SafetensorsTensor::at(int64_t i) const {
  ADAMAS_CHECK(i >= 0 && i < n_elements, ErrorKind::invalid_argument, "tensor '{}': element {} of {}", name, i,
               n_elements);
  if (type == GgmlType::F32) {
    float f;
    std::memcpy(&f, data + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, data + 2 * i, 2);
  return type == GgmlType::F16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
}

std::vector<float> SafetensorsTensor::to_f32() const {
  std::vector<float> out(static_cast<size_t>(n_elements));
  if (type == GgmlType::F32) {
    if (n_elements > 0) std::memcpy(out.data(), data, size_t(n_bytes));
    return out;
  }
  for (int64_t i = 0; i < n_elements; ++i) {
    uint16_t h;
    std::memcpy(&h, data + 2 * i, 2);
    out[size_t(i)] = type == GgmlType::F16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// SafetensorsFile
// ---------------------------------------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.source_ = std::make_unique<std::string>(path);
  f.bytes_ = FileBytes::map(path);
  f.parse();
  return f;
}

SafetensorsFile SafetensorsFile::from_bytes(std::span<const uint8_t> bytes, std::string source) {
  SafetensorsFile f;
  f.source_ = std::make_unique<std::string>(std::move(source));
  f.bytes_ = FileBytes::copy(bytes);
  f.parse();
  return f;
}

// Moves keep every pointer valid: the bytes do not move (FileBytes), nor do the vectors' heap buffers.
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

void SafetensorsFile::parse() {
  const std::string& src = *source_;
  ADAMAS_CHECK(bytes_.size() >= 8, ErrorKind::format, "{}: not a safetensors file: {} bytes, too short for the header length",
               src, bytes_.size());
  uint64_t n = 0;
  std::memcpy(&n, bytes_.data(), 8);
  ADAMAS_CHECK(n <= kMaxHeaderBytes, ErrorKind::format,
               "{}: absurd safetensors header length {} (limit {} bytes; not a safetensors file?)", src, n,
               kMaxHeaderBytes);
  ADAMAS_CHECK(n <= bytes_.size() - 8, ErrorKind::format,
               "{}: truncated: header length {} exceeds the {} bytes after the length field", src, n, bytes_.size() - 8);
  ADAMAS_CHECK(n >= 2, ErrorKind::format, "{}: header length {} is too short for a JSON object", src, n);
  data_offset_ = 8 + n;
  const uint64_t data_size = bytes_.size() - data_offset_;

  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes_.data() + 8), reinterpret_cast<const char*>(bytes_.data() + 8 + n));
  } catch (const json::exception& e) {
    fail(ErrorKind::format, "{}: malformed safetensors header JSON: {}", src, e.what());
  }
  ADAMAS_CHECK(header.is_object(), ErrorKind::format, "{}: the safetensors header is a JSON {}, not an object", src,
               header.type_name());

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      ADAMAS_CHECK(v.is_object(), ErrorKind::format, "{}: __metadata__ must be an object of strings", src);
      for (const auto& [k, s] : v.items()) {
        ADAMAS_CHECK(s.is_string(), ErrorKind::format, "{}: __metadata__['{}'] must be a string, found {}", src, k,
                     s.type_name());
        metadata_.emplace(k, s.get<std::string>());
      }
      continue;
    }
    ADAMAS_CHECK(!name.empty(), ErrorKind::format, "{}: a tensor has an empty name", src);
    ADAMAS_CHECK(v.is_object(), ErrorKind::format, "{}: tensor '{}': entry must be an object, found {}", src, name,
                 v.type_name());
    const auto dt = v.find("dtype");
    const auto sh = v.find("shape");
    const auto off = v.find("data_offsets");
    ADAMAS_CHECK(dt != v.end() && dt->is_string(), ErrorKind::format, "{}: tensor '{}': missing or non-string dtype",
                 src, name);
    ADAMAS_CHECK(sh != v.end() && sh->is_array(), ErrorKind::format, "{}: tensor '{}': missing or non-array shape",
                 src, name);
    ADAMAS_CHECK(off != v.end() && off->is_array() && off->size() == 2, ErrorKind::format,
                 "{}: tensor '{}': data_offsets must be an array [begin, end]", src, name);

    SafetensorsTensor t;
    t.name = name;
    t.dtype = dt->get<std::string>();
    if (t.dtype == "F32") t.type = GgmlType::F32;
    else if (t.dtype == "F16") t.type = GgmlType::F16;
    else if (t.dtype == "BF16") t.type = GgmlType::BF16;
    else if (std::find(std::begin(kKnownDtypes), std::end(kKnownDtypes), t.dtype) != std::end(kKnownDtypes))
      fail(ErrorKind::unsupported, "{}: tensor '{}' has dtype {}, which is not supported (supported: F32, F16, BF16)",
           src, name, t.dtype);
    else
      fail(ErrorKind::format, "{}: tensor '{}' has unknown dtype '{}'", src, name, t.dtype);

    ADAMAS_CHECK(sh->size() <= size_t(kMaxDims), ErrorKind::format, "{}: tensor '{}' has {} dimensions (limit {})",
                 src, name, sh->size(), kMaxDims);
    // Element count, overflow-checked against the data buffer (no product can exceed what the file holds).
    const uint64_t esize = t.type == GgmlType::F32 ? 4 : 2;
    uint64_t count = 1;
    bool zero = false;
    for (const auto& d : *sh) {
      const int64_t x = nonneg_int(d, src, name, "shape");
      t.hf_shape.push_back(x);
      if (x == 0) zero = true;
    }
    for (int64_t x : t.hf_shape) {
      if (zero) {
        count = 0;
        break;
      }
      ADAMAS_CHECK(uint64_t(x) <= data_size / esize / count, ErrorKind::format,
                   "{}: tensor '{}': absurd shape {} for a data buffer of {} bytes", src, name, sh->dump(), data_size);
      count *= uint64_t(x);
    }
    t.n_elements = int64_t(count);
    t.n_bytes = int64_t(count * esize);
    const int64_t begin = nonneg_int((*off)[0], src, name, "data_offsets");
    const int64_t end = nonneg_int((*off)[1], src, name, "data_offsets");
    ADAMAS_CHECK(begin <= end, ErrorKind::format, "{}: tensor '{}': data_offsets [{}, {}] end before begin", src, name,
                 begin, end);
    ADAMAS_CHECK(uint64_t(end) <= data_size, ErrorKind::format,
                 "{}: tensor '{}': data_offsets [{}, {}] out of the data buffer of {} bytes (truncated file?)", src,
                 name, begin, end, data_size);
    ADAMAS_CHECK(end - begin == t.n_bytes, ErrorKind::format,
                 "{}: tensor '{}': data_offsets [{}, {}] span {} bytes but shape {} of {} needs {}", src, name, begin,
                 end, end - begin, sh->dump(), t.dtype, t.n_bytes);
    t.offset = uint64_t(begin);
    t.data = bytes_.data() + data_offset_ + t.offset;
    t.shape.assign(t.hf_shape.rbegin(), t.hf_shape.rend());
    if (t.shape.empty()) t.shape.push_back(1);
    t.source = src;
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.n_bytes < b.n_bytes;
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const SafetensorsTensor& a = tensors_[i - 1];
    const SafetensorsTensor& b = tensors_[i];
    ADAMAS_CHECK(b.offset >= a.offset + uint64_t(a.n_bytes), ErrorKind::format,
                 "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", src, a.name, a.offset,
                 a.offset + uint64_t(a.n_bytes), b.name, b.offset, b.offset + uint64_t(b.n_bytes));
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const SafetensorsTensor* SafetensorsFile::find_tensor(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensor& SafetensorsFile::tensor(std::string_view name) const {
  const SafetensorsTensor* t = find_tensor(name);
  ADAMAS_CHECK(t != nullptr, ErrorKind::format, "{}: missing tensor '{}'", source(), name);
  return *t;
}

// ---------------------------------------------------------------------------------------------------------------
// SafetensorsCheckpoint
// ---------------------------------------------------------------------------------------------------------------

void SafetensorsCheckpoint::add_shard(SafetensorsFile file) {
  shards_.push_back(std::move(file));
  const SafetensorsFile& f = shards_.back();
  for (const SafetensorsTensor& t : f.tensors()) {
    const auto [it, inserted] = tensors_.emplace(t.name, &t);
    ADAMAS_CHECK(inserted, ErrorKind::format, "{}: tensor '{}' is in two shards: {} and {}", source_, t.name,
                 it->second->source, f.source());
  }
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint c;
  std::error_code ec;
  std::string index_path;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::is_regular_file(dir / "model.safetensors.index.json", ec)) {
      index_path = (dir / "model.safetensors.index.json").string();
    } else if (fs::is_regular_file(dir / "model.safetensors", ec)) {
      c.source_ = (dir / "model.safetensors").string();
      c.add_shard(SafetensorsFile::open(c.source_));
      return c;
    } else {
      fail(ErrorKind::io, "{}: no model.safetensors.index.json or model.safetensors in this directory", path);
    }
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index_path = path;
  } else {
    c.source_ = path;
    c.add_shard(SafetensorsFile::open(path));
    return c;
  }

  c.source_ = index_path;
  const std::string text = read_text_file(index_path);
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    fail(ErrorKind::format, "{}: malformed index JSON: {}", index_path, e.what());
  }
  ADAMAS_CHECK(index.is_object(), ErrorKind::format, "{}: the index is not a JSON object", index_path);
  const auto wm = index.find("weight_map");
  ADAMAS_CHECK(wm != index.end() && wm->is_object(), ErrorKind::format,
               "{}: missing or non-object \"weight_map\"", index_path);
  ADAMAS_CHECK(!wm->empty(), ErrorKind::format, "{}: \"weight_map\" is empty", index_path);

  const fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, size_t> shard_index;  // file name -> position in shards_
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [name, file] : wm->items()) {
    ADAMAS_CHECK(file.is_string(), ErrorKind::format, "{}: weight_map['{}'] must be a file name, found {}",
                 index_path, name, file.type_name());
    const std::string shard = file.get<std::string>();
    ADAMAS_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard.find('\\') == std::string::npos &&
                     shard != "." && shard != "..",
                 ErrorKind::format, "{}: weight_map['{}'] = '{}' is not a plain file name in the index's directory",
                 index_path, name, shard);
    entries.emplace_back(name, shard);
    if (shard_index.count(shard) == 0) shard_index.emplace(shard, shard_index.size());
  }
  // Open each shard once, in first-mention order.
  std::vector<std::string> order(shard_index.size());
  for (const auto& [file, i] : shard_index) order[i] = file;
  c.shards_.reserve(order.size());
  for (const std::string& file : order) c.add_shard(SafetensorsFile::open((dir / file).string()));
  for (const auto& [name, shard] : entries) {
    const SafetensorsFile& f = c.shards_[shard_index.at(shard)];
    ADAMAS_CHECK(f.find_tensor(name) != nullptr, ErrorKind::format,
                 "{}: weight_map puts tensor '{}' in {}, which does not contain it", index_path, name, shard);
  }
  return c;
}

const SafetensorsTensor* SafetensorsCheckpoint::find_tensor(std::string_view name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const SafetensorsTensor& SafetensorsCheckpoint::tensor(std::string_view name) const {
  const SafetensorsTensor* t = find_tensor(name);
  ADAMAS_CHECK(t != nullptr, ErrorKind::format, "{}: missing tensor '{}'", source_, name);
  return *t;
}

int64_t SafetensorsCheckpoint::total_bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t->n_bytes;
  return n;
}

}  // namespace adamas
