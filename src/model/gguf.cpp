#include "model/gguf.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "core/check.h"

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace adamas {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // arrays of arrays nest at most this deep

// Bytes of one scalar of a GGUF type; 0 for string and array.
uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    case GgufType::string: case GgufType::array: return 0;
  }
  return 0;
}

bool valid_type(uint32_t t) { return t <= uint32_t(GgufType::f64); }

bool is_signed(GgufType t) {
  return t == GgufType::i8 || t == GgufType::i16 || t == GgufType::i32 || t == GgufType::i64;
}

// Sign-extend the low `bytes` bytes of `bits`.
int64_t sign_extend(uint64_t bits, uint64_t bytes) {
  const int shift = int(64 - 8 * bytes);
  return int64_t(bits << shift) >> shift;
}

uint64_t load_le(const uint8_t* p, uint64_t bytes) {
  uint64_t v = 0;
  std::memcpy(&v, p, bytes);
  return v;
}

}  // namespace

std::string_view gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::u8: return "uint8";
    case GgufType::i8: return "int8";
    case GgufType::u16: return "uint16";
    case GgufType::i16: return "int16";
    case GgufType::u32: return "uint32";
    case GgufType::i32: return "int32";
    case GgufType::f32: return "float32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::u64: return "uint64";
    case GgufType::i64: return "int64";
    case GgufType::f64: return "float64";
  }
  return "unknown";
}

// ---- GgufValue ----------------------------------------------------------------------------------------------

bool GgufValue::is_integer() const {
  return scalar_size(type_) != 0 && type_ != GgufType::boolean && !is_float();
}

int64_t GgufValue::as_int(std::string_view what) const {
  ADAMAS_CHECK(is_integer(), ErrorKind::format, "{}: expected an integer, found {}", what, gguf_type_name(type_));
  if (is_signed(type_)) return sign_extend(bits_, scalar_size(type_));
  ADAMAS_CHECK(bits_ <= uint64_t(std::numeric_limits<int64_t>::max()), ErrorKind::format,
               "{}: value {} does not fit in int64", what, bits_);
  return int64_t(bits_);
}

uint64_t GgufValue::as_uint(std::string_view what) const {
  ADAMAS_CHECK(is_integer(), ErrorKind::format, "{}: expected an integer, found {}", what, gguf_type_name(type_));
  if (is_signed(type_)) {
    const int64_t v = sign_extend(bits_, scalar_size(type_));
    ADAMAS_CHECK(v >= 0, ErrorKind::format, "{}: expected a non-negative integer, found {}", what, v);
    return uint64_t(v);
  }
  return bits_;
}

double GgufValue::as_float(std::string_view what) const {
  if (type_ == GgufType::f32) return std::bit_cast<float>(uint32_t(bits_));
  if (type_ == GgufType::f64) return std::bit_cast<double>(bits_);
  fail(ErrorKind::format, "{}: expected a float, found {}", what, gguf_type_name(type_));
}

bool GgufValue::as_bool(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::boolean, ErrorKind::format, "{}: expected a bool, found {}", what,
               gguf_type_name(type_));
  return bits_ != 0;
}

std::string_view GgufValue::as_string(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::string, ErrorKind::format, "{}: expected a string, found {}", what,
               gguf_type_name(type_));
  return str_;
}

std::vector<int64_t> GgufValue::as_int_array(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::array, ErrorKind::format, "{}: expected an array, found {}", what,
               gguf_type_name(type_));
  GgufValue elem;
  elem.type_ = elem_type_;
  ADAMAS_CHECK(elem.is_integer(), ErrorKind::format, "{}: expected an array of integers, found an array of {}",
               what, gguf_type_name(elem_type_));
  const uint64_t size = scalar_size(elem_type_);
  std::vector<int64_t> out(count_);
  for (uint64_t i = 0; i < count_; ++i) {
    elem.bits_ = load_le(raw_ + i * size, size);
    out[i] = elem.as_int(what);
  }
  return out;
}

std::vector<double> GgufValue::as_float_array(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::array, ErrorKind::format, "{}: expected an array, found {}", what,
               gguf_type_name(type_));
  ADAMAS_CHECK(elem_type_ == GgufType::f32 || elem_type_ == GgufType::f64, ErrorKind::format,
               "{}: expected an array of floats, found an array of {}", what, gguf_type_name(elem_type_));
  const uint64_t size = scalar_size(elem_type_);
  std::vector<double> out(count_);
  for (uint64_t i = 0; i < count_; ++i) {
    const uint64_t bits = load_le(raw_ + i * size, size);
    out[i] = size == 4 ? double(std::bit_cast<float>(uint32_t(bits))) : std::bit_cast<double>(bits);
  }
  return out;
}

const std::vector<std::string_view>& GgufValue::as_string_array(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::array && elem_type_ == GgufType::string, ErrorKind::format,
               "{}: expected an array of strings, found {}{}", what, gguf_type_name(type_),
               type_ == GgufType::array ? fmt::format(" of {}", gguf_type_name(elem_type_)) : "");
  return strings_;
}

const std::vector<GgufValue>& GgufValue::as_array_array(std::string_view what) const {
  ADAMAS_CHECK(type_ == GgufType::array && elem_type_ == GgufType::array, ErrorKind::format,
               "{}: expected an array of arrays, found {}{}", what, gguf_type_name(type_),
               type_ == GgufType::array ? fmt::format(" of {}", gguf_type_name(elem_type_)) : "");
  return values_;
}

// ---- parser -------------------------------------------------------------------------------------------------

class GgufParser {
 public:
  explicit GgufParser(GgufFile& f) : f_(f) {}

  void run() {
    ADAMAS_CHECK(f_.bytes_.size() >= 4, ErrorKind::format, "{}: not a GGUF file: {} bytes, too short for the magic",
                 f_.source_, f_.bytes_.size());
    const uint32_t magic = u32("magic");
    ADAMAS_CHECK(magic == kMagic, ErrorKind::format, "{}: not a GGUF file: bad magic 0x{:08x} (expected \"GGUF\")",
                 f_.source_, magic);
    f_.version_ = u32("version");
    ADAMAS_CHECK(f_.version_ == 2 || f_.version_ == 3, ErrorKind::format,
                 "{}: unsupported GGUF version {} (supported: 2, 3)", f_.source_, f_.version_);
    const uint64_t n_tensors = u64("tensor count");
    const uint64_t n_kv = u64("metadata count");
    // Each kv takes at least 8 + 4 + 1 bytes, each tensor info at least 8 + 1 + 4 + 8 + 4 + 8.
    ADAMAS_CHECK(n_kv <= remaining() / 13, ErrorKind::format,
                 "{}: metadata count {} is impossible for a file of {} bytes", f_.source_, n_kv, f_.bytes_.size());
    ADAMAS_CHECK(n_tensors <= remaining() / 33, ErrorKind::format,
                 "{}: tensor count {} is impossible for a file of {} bytes", f_.source_, n_tensors, f_.bytes_.size());

    f_.kv_.reserve(n_kv);
    for (uint64_t i = 0; i < n_kv; ++i) {
      const std::string_view key = string("metadata key");
      const uint32_t t = u32("metadata value type");
      ADAMAS_CHECK(valid_type(t), ErrorKind::format, "{}: metadata key '{}' has unknown value type {}",
                   f_.source_, key, t);
      context_ = key;
      GgufValue v = value(GgufType(t), 0);
      context_ = {};
      ADAMAS_CHECK(f_.kv_index_.emplace(key, f_.kv_.size()).second, ErrorKind::format,
                   "{}: duplicate metadata key '{}'", f_.source_, key);
      f_.kv_.emplace_back(key, std::move(v));
    }

    if (const GgufValue* a = f_.find("general.alignment")) {
      ADAMAS_CHECK(a->type() == GgufType::u32, ErrorKind::format,
                   "{}: general.alignment must be a uint32, found {}", f_.source_, gguf_type_name(a->type()));
      const uint64_t align = a->as_uint();
      ADAMAS_CHECK(align != 0 && std::has_single_bit(align), ErrorKind::format,
                   "{}: general.alignment {} is not a power of two", f_.source_, align);
      f_.alignment_ = align;
    }

    f_.tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) f_.tensors_.push_back(tensor_info(i));

    const uint64_t pad = (f_.alignment_ - pos_ % f_.alignment_) % f_.alignment_;
    f_.data_offset_ = pos_ + pad;  // no overflow: pos_ <= size_ and pad < 2^32
    const uint64_t data_size = f_.bytes_.size() > f_.data_offset_ ? f_.bytes_.size() - f_.data_offset_ : 0;
    for (GgufTensor& t : f_.tensors_) {
      ADAMAS_CHECK(t.offset % f_.alignment_ == 0, ErrorKind::format,
                   "{}: tensor '{}' data offset {} is not a multiple of the alignment {}", f_.source_, t.name,
                   t.offset, f_.alignment_);
      ADAMAS_CHECK(t.offset <= data_size && uint64_t(t.n_bytes) <= data_size - t.offset, ErrorKind::format,
                   "{}: tensor '{}' data [{}, +{}) lies outside the data section of {} bytes (file truncated?)",
                   f_.source_, t.name, t.offset, t.n_bytes, data_size);
      t.data = f_.bytes_.data() + f_.data_offset_ + t.offset;
    }
  }

 private:
  uint64_t remaining() const { return f_.bytes_.size() - pos_; }

  const uint8_t* take(uint64_t n, std::string_view what) {
    if (n > remaining()) {
      if (context_.empty())
        fail(ErrorKind::format, "{}: truncated: {} needs {} bytes at offset {}, only {} left", f_.source_, what, n,
             pos_, remaining());
      fail(ErrorKind::format, "{}: truncated: {} of '{}' needs {} bytes at offset {}, only {} left", f_.source_,
           what, context_, n, pos_, remaining());
    }
    const uint8_t* p = f_.bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint32_t u32(std::string_view what) { return uint32_t(load_le(take(4, what), 4)); }
  uint64_t u64(std::string_view what) { return load_le(take(8, what), 8); }

  std::string_view string(std::string_view what) {
    const uint64_t len = u64(what);
    ADAMAS_CHECK(len <= remaining(), ErrorKind::format,
                 "{}: {} length {} at offset {} exceeds the {} bytes left in the file{}", f_.source_, what, len,
                 pos_ - 8, remaining(), context_.empty() ? std::string() : fmt::format(" (in '{}')", context_));
    const uint8_t* p = take(len, what);
    return {reinterpret_cast<const char*>(p), size_t(len)};
  }

  GgufValue value(GgufType t, int depth) {
    GgufValue v;
    v.type_ = t;
    if (t == GgufType::string) {
      v.str_ = string("string value");
    } else if (t == GgufType::array) {
      ADAMAS_CHECK(depth < kMaxArrayDepth, ErrorKind::format, "{}: arrays in '{}' nest deeper than {}", f_.source_,
                   context_, kMaxArrayDepth);
      const uint32_t et = u32("array element type");
      ADAMAS_CHECK(valid_type(et), ErrorKind::format, "{}: array in '{}' has unknown element type {}", f_.source_,
                   context_, et);
      v.elem_type_ = GgufType(et);
      v.count_ = u64("array length");
      const uint64_t es = scalar_size(v.elem_type_);
      const uint64_t min_size = es != 0 ? es : (v.elem_type_ == GgufType::string ? 8 : 12);
      ADAMAS_CHECK(v.count_ <= remaining() / min_size, ErrorKind::format,
                   "{}: array in '{}' claims {} elements of {}, more than the {} bytes left in the file allow",
                   f_.source_, context_, v.count_, gguf_type_name(v.elem_type_), remaining());
      if (es != 0) {
        v.raw_ = take(v.count_ * es, "array elements");
        if (v.elem_type_ == GgufType::boolean)
          for (uint64_t i = 0; i < v.count_; ++i)
            ADAMAS_CHECK(v.raw_[i] <= 1, ErrorKind::format, "{}: array in '{}' has bool element {} = {}",
                         f_.source_, context_, i, v.raw_[i]);
      } else if (v.elem_type_ == GgufType::string) {
        v.strings_.reserve(v.count_);
        for (uint64_t i = 0; i < v.count_; ++i) v.strings_.push_back(string("array string"));
      } else {
        v.values_.reserve(v.count_);
        for (uint64_t i = 0; i < v.count_; ++i) v.values_.push_back(value(GgufType::array, depth + 1));
      }
    } else {
      const uint64_t size = scalar_size(t);
      v.bits_ = load_le(take(size, gguf_type_name(t)), size);
      ADAMAS_CHECK(t != GgufType::boolean || v.bits_ <= 1, ErrorKind::format, "{}: '{}' has bool value {}",
                   f_.source_, context_, v.bits_);
    }
    return v;
  }

  GgufTensor tensor_info(uint64_t index) {
    GgufTensor t;
    t.name = string("tensor name");
    context_ = t.name;
    ADAMAS_CHECK(!t.name.empty(), ErrorKind::format, "{}: tensor {} has an empty name", f_.source_, index);
    const uint32_t n_dims = u32("tensor dimension count");
    ADAMAS_CHECK(n_dims >= 1 && n_dims <= kMaxDims, ErrorKind::format,
                 "{}: tensor '{}' has {} dimensions (expected 1..{})", f_.source_, t.name, n_dims, kMaxDims);
    int64_t n = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = u64("tensor dimension");
      ADAMAS_CHECK(dim >= 1 && dim <= uint64_t(std::numeric_limits<int64_t>::max()), ErrorKind::format,
                   "{}: tensor '{}' dimension {} is {} (expected >= 1)", f_.source_, t.name, d, dim);
      ADAMAS_CHECK(!__builtin_mul_overflow(n, int64_t(dim), &n), ErrorKind::format,
                   "{}: tensor '{}' element count overflows", f_.source_, t.name);
      t.shape.push_back(int64_t(dim));
    }
    t.n_elements = n;
    const uint32_t type = u32("tensor type");
    const GgmlTypeInfo* info = ggml_type_info(type);
    ADAMAS_CHECK(info != nullptr, ErrorKind::format, "{}: tensor '{}' has unknown ggml type {}", f_.source_,
                 t.name, type);
    t.type = GgmlType(type);
    ADAMAS_CHECK(t.shape[0] % info->block_size == 0, ErrorKind::format,
                 "{}: tensor '{}' row length {} is not a multiple of the {} block size {}", f_.source_, t.name,
                 t.shape[0], info->name, info->block_size);
    ADAMAS_CHECK(!__builtin_mul_overflow(n / info->block_size, info->type_size, &t.n_bytes), ErrorKind::format,
                 "{}: tensor '{}' byte size overflows", f_.source_, t.name);
    t.offset = u64("tensor data offset");
    context_ = {};
    ADAMAS_CHECK(f_.tensor_index_.emplace(t.name, f_.tensors_.size()).second, ErrorKind::format,
                 "{}: duplicate tensor name '{}'", f_.source_, t.name);
    return t;
  }

  GgufFile& f_;
  uint64_t pos_ = 0;
  std::string_view context_;  // the key or tensor being read, for messages
};

// ---- GgufFile -----------------------------------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.source_ = path;
  f.bytes_ = FileBytes::map(path);
  f.parse();
  return f;
}

GgufFile GgufFile::from_bytes(std::span<const uint8_t> bytes, std::string source) {
  GgufFile f;
  f.source_ = std::move(source);
  f.bytes_ = FileBytes::copy(bytes);
  f.parse();
  return f;
}

void GgufFile::parse() { GgufParser(*this).run(); }

// Moves keep every pointer valid: the bytes do not move (FileBytes), nor do the vectors' heap buffers.
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

bool GgufFile::has(std::string_view key) const { return kv_index_.contains(key); }

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  ADAMAS_CHECK(v != nullptr, ErrorKind::format, "{}: missing metadata key '{}'", source_, key);
  return *v;
}

std::string_view GgufFile::get_string_or(std::string_view key, std::string_view fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_string(key) : fallback;
}
int64_t GgufFile::get_int_or(std::string_view key, int64_t fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_int(key) : fallback;
}
double GgufFile::get_float_or(std::string_view key, double fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_float(key) : fallback;
}
bool GgufFile::get_bool_or(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  return v ? v->as_bool(key) : fallback;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(std::string_view name) const {
  const GgufTensor* t = find_tensor(name);
  ADAMAS_CHECK(t != nullptr, ErrorKind::format, "{}: missing tensor '{}'", source_, name);
  return *t;
}

}  // namespace adamas
