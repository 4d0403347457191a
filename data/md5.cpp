// MD5 (RFC 1321), computed in-process to check downloads against their published sums. Not for
// security: only to catch truncated or corrupted archives. Follows the RFC's reference structure:
// 64-byte blocks, four rounds of 16 steps, little-endian words, length padding.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <vector>

#include "data/fetch.hpp"
#include "data/file_util.hpp"
#include "engine/error.hpp"

namespace mg::data {
namespace {

class Md5 {
 public:
  void update(const uint8_t* data, size_t n) {
    total_bytes_ += n;
    while (n > 0) {
      const size_t take = std::min(n, 64 - buffered_);
      std::memcpy(buffer_.data() + buffered_, data, take);
      buffered_ += take;
      data += take;
      n -= take;
      if (buffered_ == 64) {
        transform(buffer_.data());
        buffered_ = 0;
      }
    }
  }

  std::string hex_digest() {
    const uint64_t bit_length = total_bytes_ * 8;
    const uint8_t first_pad = 0x80;
    update(&first_pad, 1);
    const uint8_t zero = 0;
    while (buffered_ != 56) update(&zero, 1);
    uint8_t length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(bit_length >> (8 * i));
    update(length_bytes, 8);
    static const char* digits = "0123456789abcdef";
    std::string hex;
    for (uint32_t word : state_)
      for (int i = 0; i < 4; ++i) {
        const uint8_t byte = static_cast<uint8_t>(word >> (8 * i));
        hex += digits[byte >> 4];
        hex += digits[byte & 15];
      }
    return hex;
  }

 private:
  static uint32_t rotate_left(uint32_t x, int s) { return x << s | x >> (32 - s); }

  void transform(const uint8_t* block) {
    // Per-step shift amounts and the constants floor(2^32 * |sin(i + 1)|) of RFC 1321 section 3.4.
    static constexpr int kShift[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                       5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                       4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                       6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
    static constexpr uint32_t kSine[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
        0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
        0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
        0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
        0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
        0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
        0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
    uint32_t words[16];
    for (int i = 0; i < 16; ++i)
      words[i] = uint32_t{block[4 * i]} | uint32_t{block[4 * i + 1]} << 8 | uint32_t{block[4 * i + 2]} << 16 |
                 uint32_t{block[4 * i + 3]} << 24;
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    for (int step = 0; step < 64; ++step) {
      uint32_t mixed;
      int word;
      if (step < 16) {
        mixed = (b & c) | (~b & d);
        word = step;
      } else if (step < 32) {
        mixed = (d & b) | (~d & c);
        word = (5 * step + 1) % 16;
      } else if (step < 48) {
        mixed = b ^ c ^ d;
        word = (3 * step + 5) % 16;
      } else {
        mixed = c ^ (b | ~d);
        word = (7 * step) % 16;
      }
      const uint32_t rotated = rotate_left(a + mixed + kSine[step] + words[word], kShift[step]);
      a = d;
      d = c;
      c = b;
      b = b + rotated;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
  }

  std::array<uint32_t, 4> state_ = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace

std::string md5_hex_of(std::string_view bytes) {
  Md5 md5;
  md5.update(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return md5.hex_digest();
}

std::string md5_hex(const std::string& path) {
  io::require_file("md5", path, "a file to checksum");
  std::ifstream in(path, std::ios::binary);
  MG_CHECK(in.good(), "md5: cannot open ", path);
  Md5 md5;
  std::vector<char> chunk(size_t{1} << 20);
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    md5.update(reinterpret_cast<const uint8_t*>(chunk.data()), static_cast<size_t>(in.gcount()));
  }
  MG_CHECK(in.eof(), "md5: read error in ", path);
  return md5.hex_digest();
}

void verify_md5(const std::string& path, const std::string& expected_hex) {
  const std::string found = md5_hex(path);
  std::string expected = expected_hex;
  for (char& ch : expected) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  MG_CHECK(found == expected, "md5: ", path, " has MD5 ", found, ", expected ", expected,
           " (a truncated or corrupted file: delete it and fetch it again)");
}

}  // namespace mg::data
