// libFuzzer target: any bytes given to the GGUF reader (and, when it parses, the tokenizer and a dequantize of
// every tensor's first row) must yield a value or adamas::Error, never a crash, a leak or undefined behaviour.
// Build: scripts/fuzz-gguf (clang++ -fsanitize=fuzzer,address,undefined).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "model/gguf.h"
#include "model/quant.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const adamas::GgufFile f = adamas::GgufFile::from_bytes(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& [key, value] : f.metadata()) {
      if (value.type() == adamas::GgufType::array && value.array_type() != adamas::GgufType::string &&
          value.array_type() != adamas::GgufType::array) {
        try { (void)value.as_int_array(key); } catch (const adamas::Error&) {}
      }
    }
    std::vector<float> row;
    for (const adamas::GgufTensor& t : f.tensors()) {
      if (!adamas::ggml_type_info(t.type).dequantizable || t.row_length() > (1 << 16)) continue;
      row.resize(size_t(t.row_length()));
      adamas::dequantize_row(t.type, t.row(0), row.data(), t.row_length());
      std::vector<float> x(row.size(), 1.0f);
      (void)adamas::vec_dot(t.type, t.row(t.n_rows() - 1), x.data(), t.row_length());
    }
    try {
      const adamas::Tokenizer tok = adamas::Tokenizer::from_gguf(f);
      (void)tok.decode(tok.encode("Hello <|im_start|> world 123 \xe6\x97", true));
    } catch (const adamas::Error&) {
    }
  } catch (const adamas::Error&) {
  }
  return 0;
}
