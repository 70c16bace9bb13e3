#include "worker/json_line.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace conveyor::worker {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A recursive-descent reader over one line.
class Reader {
 public:
  explicit Reader(absl::string_view text) : text_(text) {}

  absl::StatusOr<JsonFields> Object() {
    SkipSpace();
    if (!Consume('{')) return Error("expected a JSON object starting with '{'");
    JsonFields fields;
    SkipSpace();
    if (!Consume('}')) {
      while (true) {
        SkipSpace();
        if (Peek() != '"') return Error("expected a quoted key");
        const size_t key_at = pos_;
        absl::StatusOr<std::string> key = String();
        if (!key.ok()) return key.status();
        for (const auto& [k, v] : fields) {
          if (k == *key) {
            pos_ = key_at;
            return Error(absl::StrCat("the key \"", *key, "\" appears twice"));
          }
        }
        SkipSpace();
        if (!Consume(':')) return Error("expected ':' after a key");
        SkipSpace();
        absl::StatusOr<JsonScalar> value = Value();
        if (!value.ok()) return value.status();
        fields.emplace_back(*std::move(key), *std::move(value));
        SkipSpace();
        if (Consume(',')) continue;
        if (Consume('}')) break;
        return Error("expected ',' or '}'");
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the object");
    return fields;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c || pos_ >= text_.size()) return false;
    ++pos_;
    return true;
  }
  bool ConsumeWord(absl::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\r' ||
            text_[pos_] == '\n')) {
      ++pos_;
    }
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(what, " at column ", pos_ + 1));
  }

  absl::StatusOr<JsonScalar> Value() {
    JsonScalar v;
    const char c = Peek();
    if (c == '"') {
      absl::StatusOr<std::string> s = String();
      if (!s.ok()) return s.status();
      v.kind = JsonScalar::Kind::kString;
      v.text = *std::move(s);
    } else if (ConsumeWord("true")) {
      v.kind = JsonScalar::Kind::kBool;
      v.boolean = true;
    } else if (ConsumeWord("false")) {
      v.kind = JsonScalar::Kind::kBool;
    } else if (ConsumeWord("null")) {
      v.kind = JsonScalar::Kind::kNull;
    } else if (c == '-' || absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      absl::StatusOr<std::string> n = Number();
      if (!n.ok()) return n.status();
      v.kind = JsonScalar::Kind::kNumber;
      v.text = *std::move(n);
    } else if (c == '{' || c == '[') {
      return Error("nested objects and arrays are not allowed here");
    } else {
      return Error("expected a value (a string, a number, true, false or null)");
    }
    return v;
  }

  absl::StatusOr<std::string> Number() {
    const size_t start = pos_;
    Consume('-');
    if (Consume('0')) {
    } else if (!Digits()) {
      return Error("a malformed number");
    }
    if (Consume('.') && !Digits()) return Error("a malformed number");
    if (Consume('e') || Consume('E')) {
      if (!Consume('+')) Consume('-');
      if (!Digits()) return Error("a malformed number");
    }
    return std::string(text_.substr(start, pos_ - start));
  }

  bool Digits() {
    const size_t start = pos_;
    while (absl::ascii_isdigit(static_cast<unsigned char>(Peek())) && pos_ < text_.size()) ++pos_;
    return pos_ > start;
  }

  absl::StatusOr<uint32_t> Hex4() {
    if (pos_ + 4 > text_.size()) return Error("a \\u escape needs four hex digits");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_ + i];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return Error("a \\u escape needs four hex digits");
      }
    }
    pos_ += 4;
    return v;
  }

  absl::StatusOr<std::string> String() {
    ++pos_;  // the opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) return Error("an unterminated string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return Error("a control character inside a string (escape it)");
      }
      if (c != '\\') {
        out.push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      const char e = Peek();
      if (pos_ >= text_.size()) return Error("an unterminated string");
      ++pos_;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          absl::StatusOr<uint32_t> cp = Hex4();
          if (!cp.ok()) return cp.status();
          if (*cp >= 0xD800 && *cp <= 0xDBFF) {
            if (!ConsumeWord("\\u")) return Error("a lone UTF-16 surrogate in a \\u escape");
            absl::StatusOr<uint32_t> low = Hex4();
            if (!low.ok()) return low.status();
            if (*low < 0xDC00 || *low > 0xDFFF) {
              return Error("a lone UTF-16 surrogate in a \\u escape");
            }
            AppendUtf8(0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00), &out);
          } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
            return Error("a lone UTF-16 surrogate in a \\u escape");
          } else {
            AppendUtf8(*cp, &out);
          }
          break;
        }
        default:
          --pos_;
          return Error(absl::StrCat("an unknown escape \\", absl::string_view(&e, 1)));
      }
    }
  }

  const absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

const char* JsonKindName(JsonScalar::Kind kind) {
  switch (kind) {
    case JsonScalar::Kind::kString: return "a string";
    case JsonScalar::Kind::kNumber: return "a number";
    case JsonScalar::Kind::kBool: return "true or false";
    case JsonScalar::Kind::kNull: return "null";
  }
  return "null";
}

absl::StatusOr<JsonFields> ParseFlatJsonObject(absl::string_view text) {
  return Reader(text).Object();
}

}  // namespace conveyor::worker
