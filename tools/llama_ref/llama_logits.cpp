// llama_logits: reference logits and greedy continuations from llama.cpp, written as JSON fixtures for Adamas tests.
//
// Built by scripts/build-llama-cpp against the libllama of the llama-cpp-python sdist (not part of the main build).
// Uses only the public llama.h API. One prompt per run:
//
//   llama_logits -m MODEL (-p TEXT | -f FILE) [-o OUT.json] [--name NAME] [-c 4096] [-t 2] [-n 32] [--top 20]
//                [--positions K]     also write the top-K logits of every prompt position (0 = off, the default)
//                [--kv f32|f16]      KV cache type (default f32: the closest llama.cpp gets to exact attention)
//                [--flash-attn]      use llama.cpp's flash-attention path (default off: plain softmax(QK^T)V)
//                [--no-special]      do not parse special tokens (<|im_start|> ...) in the prompt text
//
// Tokenization: llama_tokenize(add_special = true, parse_special = true): BOS/EOS are added only if the model's
// metadata says so (SmolLM2: tokenizer.ggml.add_bos_token = false, so none). Evaluation: the whole prompt in one
// llama_decode (physical ubatch 512), then greedy decoding one token at a time (argmax, ties to the lowest id,
// which is llama.cpp's greedy sampler) for n tokens or until an end-of-generation token (which is included).
#include "llama.h"

#include <algorithm>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string & msg) {
    std::fprintf(stderr, "llama_logits: %s\n", msg.c_str());
    std::exit(1);
}

// JSON string with invalid UTF-8 bytes replaced by U+FFFD (byte-level BPE pieces can split a character).
std::string jstr(const std::string & s) {
    std::string o = "\"";
    const auto * p = reinterpret_cast<const unsigned char *>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            switch (c) {
                case '"': o += "\\\""; break;
                case '\\': o += "\\\\"; break;
                case '\n': o += "\\n"; break;
                case '\r': o += "\\r"; break;
                case '\t': o += "\\t"; break;
                default:
                    if (c < 0x20) {
                        char b[8];
                        std::snprintf(b, sizeof b, "\\u%04x", c);
                        o += b;
                    } else {
                        o += static_cast<char>(c);
                    }
            }
            ++i;
            continue;
        }
        int len = (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (int k = 1; ok && k < len; ++k) ok = (p[i + k] & 0xC0) == 0x80;
        if (ok && len == 3) {
            unsigned cp = ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6);
            ok = cp >= 0x800 && !(cp >= 0xD800 && cp <= 0xDFFF);
        }
        if (ok && len == 4) {
            unsigned cp = ((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            o.append(s, i, len);
            i += len;
        } else {
            o += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return o + "\"";
}

std::string jnum(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.5f", v);
    return b;
}

std::string piece(const llama_vocab * vocab, llama_token t) {
    std::vector<char> buf(64);
    int n = llama_token_to_piece(vocab, t, buf.data(), (int)buf.size(), 0, true);
    if (n < 0) {
        buf.resize(-n);
        n = llama_token_to_piece(vocab, t, buf.data(), (int)buf.size(), 0, true);
    }
    return n < 0 ? std::string() : std::string(buf.data(), n);
}

std::string detok(const llama_vocab * vocab, const std::vector<llama_token> & toks) {
    std::vector<char> buf(toks.size() * 16 + 64);
    int n = llama_detokenize(vocab, toks.data(), (int)toks.size(), buf.data(), (int)buf.size(), false, true);
    if (n < 0) {
        buf.resize(-n);
        n = llama_detokenize(vocab, toks.data(), (int)toks.size(), buf.data(), (int)buf.size(), false, true);
    }
    return n < 0 ? std::string() : std::string(buf.data(), n);
}

std::string meta(const llama_model * m, const char * key) {
    char buf[256];
    int n = llama_model_meta_val_str(m, key, buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf);
}

// Top-k (value descending, id ascending on ties), as [[id, value], ...].
std::vector<int> topk(const float * l, int n, int k) {
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    k = std::min(k, n);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    idx.resize(k);
    return idx;
}

std::string top_json(const float * l, int n, int k) {
    std::string o = "[";
    auto t = topk(l, n, k);
    for (size_t i = 0; i < t.size(); ++i) o += (i ? ",[" : "[") + std::to_string(t[i]) + "," + jnum(l[t[i]]) + "]";
    return o + "]";
}

int argmax(const float * l, int n) {
    int b = 0;
    for (int i = 1; i < n; ++i)
        if (l[i] > l[b]) b = i;
    return b;
}

// Summary of a full logit vector: max, argmax, min, mean, std, logsumexp, and the logits at ids 0, 1024, 2048, ...
std::string summary_json(const float * l, int n) {
    double mx = -INFINITY, mn = INFINITY, sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
        mx = std::max(mx, (double)l[i]);
        mn = std::min(mn, (double)l[i]);
        sum += l[i];
    }
    double mean = sum / n, lse = 0;
    for (int i = 0; i < n; ++i) {
        sq += (l[i] - mean) * (l[i] - mean);
        lse += std::exp(l[i] - mx);
    }
    std::string s = "{\"max\":" + jnum(mx) + ",\"argmax\":" + std::to_string(argmax(l, n)) + ",\"min\":" + jnum(mn) +
                    ",\"mean\":" + jnum(mean) + ",\"std\":" + jnum(std::sqrt(sq / n)) +
                    ",\"logsumexp\":" + jnum(mx + std::log(lse)) + ",\"stride_1024\":[";
    for (int i = 0; i < n; i += 1024) s += (i ? "," : "") + jnum(l[i]);
    return s + "]}";
}

void usage() {
    std::fprintf(stderr,
                 "usage: llama_logits -m MODEL (-p TEXT | -f FILE) [-o OUT.json] [--name NAME] [-c CTX] [-t THREADS]\n"
                 "                    [-n N] [--top K] [--positions K] [--kv f32|f16] [--flash-attn] [--no-special]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    std::string model_path, prompt, out_path, name = "prompt";
    bool have_prompt = false, parse_special = true, flash = false;
    int n_ctx = 4096, n_threads = 2, n_gen = 32, top = 20, pos_top = 0;
    std::string kv = "f32";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) usage();
            return argv[++i];
        };
        if (a == "-m") model_path = next();
        else if (a == "-p") { prompt = next(); have_prompt = true; }
        else if (a == "-f") {
            std::ifstream f(next(), std::ios::binary);
            if (!f) die("cannot read prompt file");
            std::stringstream ss;
            ss << f.rdbuf();
            prompt = ss.str();
            have_prompt = true;
        }
        else if (a == "-o") out_path = next();
        else if (a == "--name") name = next();
        else if (a == "-c") n_ctx = std::atoi(next().c_str());
        else if (a == "-t") n_threads = std::atoi(next().c_str());
        else if (a == "-n") n_gen = std::atoi(next().c_str());
        else if (a == "--top") top = std::atoi(next().c_str());
        else if (a == "--positions") pos_top = std::atoi(next().c_str());
        else if (a == "--kv") kv = next();
        else if (a == "--flash-attn") flash = true;
        else if (a == "--no-special") parse_special = false;
        else usage();
    }
    if (model_path.empty() || !have_prompt || (kv != "f32" && kv != "f16")) usage();

    llama_log_set([](ggml_log_level level, const char * text, void *) {
        if (level >= GGML_LOG_LEVEL_WARN && level != GGML_LOG_LEVEL_CONT) std::fputs(text, stderr);
    }, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) die("cannot load " + model_path);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    int n = -llama_tokenize(vocab, prompt.data(), (int)prompt.size(), nullptr, 0, true, parse_special);
    std::vector<llama_token> toks(std::max(n, 0));
    if (n <= 0 || llama_tokenize(vocab, prompt.data(), (int)prompt.size(), toks.data(), n, true, parse_special) != n)
        die("tokenization failed (or empty prompt)");
    if (n + n_gen > n_ctx) die("prompt plus continuation does not fit the context");

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = std::max(n, 1);
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = kv == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    cp.type_v = cp.type_k;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create the context");

    // Prompt: one batch, logits at every position when asked, else only at the last.
    llama_batch batch = llama_batch_init(std::max(n, 1), 0, 1);
    batch.n_tokens = n;
    for (int i = 0; i < n; ++i) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = (pos_top > 0 || i == n - 1) ? 1 : 0;
    }
    if (llama_decode(ctx, batch) != 0) die("llama_decode failed on the prompt");

    std::string positions;
    if (pos_top > 0) {
        positions = "[";
        for (int i = 0; i < n; ++i) {
            const float * l = llama_get_logits_ith(ctx, i);
            positions += std::string(i ? ",\n    " : "\n    ") + "{\"pos\":" + std::to_string(i) +
                         ",\"max\":" + jnum(*std::max_element(l, l + n_vocab)) + ",\"top\":" + top_json(l, n_vocab, pos_top) + "}";
        }
        positions += "\n  ]";
    }
    const float * last = llama_get_logits_ith(ctx, n - 1);
    std::string last_json = "{\"top\":" + top_json(last, n_vocab, top) + ",\n    \"summary\":" + summary_json(last, n_vocab) + "}";

    // Greedy continuation.
    std::vector<llama_token> gen;
    std::string steps = "[";
    bool eog = false;
    llama_token cur = argmax(last, n_vocab);
    const float * lg = last;
    for (int k = 0; k < n_gen; ++k) {
        auto t2 = topk(lg, n_vocab, 2);
        steps += std::string(k ? "," : "") + "[" + std::to_string(cur) + "," + jnum(lg[t2[0]]) + "," + jnum(lg[t2[0]] - lg[t2[1]]) + "]";
        gen.push_back(cur);
        if (llama_vocab_is_eog(vocab, cur)) { eog = true; break; }
        if (k + 1 == n_gen) break;
        batch.n_tokens = 1;
        batch.token[0] = cur;
        batch.pos[0] = n + k;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed while generating");
        lg = llama_get_logits_ith(ctx, -1);
        cur = argmax(lg, n_vocab);
    }
    steps += "]";

    auto ids_json = [](const std::vector<llama_token> & v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
        return s + "]";
    };
    auto pieces_json = [&](const std::vector<llama_token> & v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + jstr(piece(vocab, v[i]));
        return s + "]";
    };

    const char * meta_keys[] = {"general.architecture", "general.name", "tokenizer.ggml.model", "tokenizer.ggml.pre",
                                "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
                                "tokenizer.ggml.eos_token_id", "llama.rope.freq_base", "llama.context_length",
                                "llama.attention.layer_norm_rms_epsilon"};
    std::string metas = "{";
    bool first = true;
    for (const char * k : meta_keys) {
        std::string v = meta(model, k);
        if (v.empty()) continue;
        metas += (first ? "" : ",") + jstr(k) + ":" + jstr(v);
        first = false;
    }
    metas += "}";
    const int rope = llama_model_rope_type(model);

    std::string o;
    o += "{\n  \"name\": " + jstr(name) + ",\n";
    o += "  \"model\": " + jstr(model_path.substr(model_path.find_last_of('/') + 1)) + ",\n";
    o += "  \"settings\": {\"n_ctx\":" + std::to_string(n_ctx) + ",\"n_ubatch\":512,\"n_threads\":" + std::to_string(n_threads) +
         ",\"kv_type\":" + jstr(kv) + ",\"flash_attn\":" + (flash ? "true" : "false") +
         ",\"add_special\":true,\"parse_special\":" + (parse_special ? "true" : "false") +
         ",\"add_bos\":" + (llama_vocab_get_add_bos(vocab) ? "true" : "false") +
         ",\"rope_type\":" + jstr(rope == LLAMA_ROPE_TYPE_NORM ? "norm (adjacent pairs)" : rope == LLAMA_ROPE_TYPE_NEOX ? "neox (halves)" : std::to_string(rope)) +
         ",\"n_vocab\":" + std::to_string(n_vocab) + ",\"greedy\":\"argmax, ties to lowest id\"},\n";
    o += "  \"model_meta\": " + metas + ",\n";
    o += "  \"prompt\": " + jstr(prompt) + ",\n";
    o += "  \"n_prompt_tokens\": " + std::to_string(n) + ",\n";
    o += "  \"tokens\": " + ids_json(toks) + ",\n";
    o += "  \"pieces\": " + pieces_json(toks) + ",\n";
    o += "  \"last\": " + last_json + ",\n";
    o += "  \"greedy\": {\"n\":" + std::to_string(gen.size()) + ",\"stopped_at_eog\":" + (eog ? "true" : "false") +
         ",\n    \"tokens\":" + ids_json(gen) + ",\n    \"text\":" + jstr(detok(vocab, gen)) +
         ",\n    \"pieces\":" + pieces_json(gen) + ",\n    \"steps\":" + steps + "}";
    if (pos_top > 0) o += ",\n  \"positions_top_k\": " + std::to_string(pos_top) + ",\n  \"positions\": " + positions;
    o += "\n}\n";

    if (out_path.empty()) {
        std::fputs(o.c_str(), stdout);
    } else {
        std::ofstream f(out_path, std::ios::binary);
        f << o;
        if (!f) die("cannot write " + out_path);
    }

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
