// Download support without the network: MD5 against the RFC 1321 test vectors and on files, the
// .tar.gz unpacker on archives built here (a minimal ustar writer + zlib), including the archives
// it must refuse, and ensure_cifar100's offline answers.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "data/fetch.hpp"
#include "engine/error.hpp"
#include "test_data_util.hpp"

using Catch::Matchers::Contains;
using mg_test::TempDir;
namespace data = mg::data;
namespace fs = std::filesystem;

namespace {

// A ustar archive written block by block (POSIX 1003.1-1988 header fields and checksum).
class UstarWriter {
 public:
  void add(const std::string& name, char type, const std::string& contents = "",
           const std::string& prefix = "") {
    std::vector<uint8_t> header(512, 0);
    std::memcpy(header.data(), name.data(), std::min<size_t>(name.size(), 100));
    std::memcpy(header.data() + 345, prefix.data(), std::min<size_t>(prefix.size(), 155));
    octal(header, 100, 8, 0644);
    octal(header, 108, 8, 0);
    octal(header, 116, 8, 0);
    octal(header, 124, 12, contents.size());
    octal(header, 136, 12, 0);
    header[156] = static_cast<uint8_t>(type);
    std::memcpy(header.data() + 257,
                "ustar\0"
                "00",
                8);
    std::memset(header.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (uint8_t byte : header) sum += byte;
    octal(header, 148, 7, sum);
    bytes_.insert(bytes_.end(), header.begin(), header.end());
    bytes_.insert(bytes_.end(), contents.begin(), contents.end());
    bytes_.resize((bytes_.size() + 511) / 512 * 512, 0);
  }
  std::vector<uint8_t> finish() {
    bytes_.resize(bytes_.size() + 1024, 0);  // two zero blocks end the archive
    return bytes_;
  }

 private:
  static void octal(std::vector<uint8_t>& header, size_t offset, size_t width, uint64_t value) {
    std::string digits(width - 1, '0');
    for (size_t i = width - 1; i-- > 0; value /= 8) digits[i] = static_cast<char>('0' + value % 8);
    std::memcpy(header.data() + offset, digits.data(), width - 1);
    header[offset + width - 1] = 0;
  }
  std::vector<uint8_t> bytes_;
};

std::string big_contents() {
  std::string text;
  for (int i = 0; i < 3000; ++i) text += static_cast<char>('a' + i * 7 % 26);
  return text;
}

}  // namespace

TEST_CASE("md5: RFC 1321 test vectors, files, verify_md5", "[data]") {
  REQUIRE(data::md5_hex_of("") == "d41d8cd98f00b204e9800998ecf8427e");
  REQUIRE(data::md5_hex_of("a") == "0cc175b9c0f1b6a831c399e269772661");
  REQUIRE(data::md5_hex_of("abc") == "900150983cd24fb0d6963f7d28e17f72");
  REQUIRE(data::md5_hex_of("message digest") == "f96b697d7cb7938d525a2f31aaf161d0");
  REQUIRE(data::md5_hex_of("abcdefghijklmnopqrstuvwxyz") == "c3fcd3d76192e4007dfb496cca67e13b");
  REQUIRE(data::md5_hex_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") ==
          "d174ab98d277d9f5a5611c2c9f419d9f");
  REQUIRE(data::md5_hex_of("1234567890123456789012345678901234567890123456789012345678901234567890123456"
                           "7890") == "57edf4a22be3c955ac49da2e2107b67a");

  TempDir dir;
  // Larger than the 1 MiB read chunk, and not a whole number of 64-byte blocks.
  std::string contents(2'500'001, '\0');
  for (size_t i = 0; i < contents.size(); ++i) contents[i] = static_cast<char>(i * 131 % 251);
  mg_test::write_text(dir.file("blob"), contents);
  const std::string sum = data::md5_hex(dir.file("blob"));
  REQUIRE(sum == data::md5_hex_of(contents));
  data::verify_md5(dir.file("blob"), sum);
  std::string upper = sum;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  data::verify_md5(dir.file("blob"), upper);
  REQUIRE_THROWS_WITH(data::verify_md5(dir.file("blob"), "0123456789abcdef0123456789abcdef"),
                      Contains(dir.file("blob") + " has MD5 " + sum) &&
                          Contains("expected 0123456789abcdef0123456789abcdef"));
  REQUIRE_THROWS_WITH(data::md5_hex(dir.file("none")), Contains("missing file " + dir.file("none")));
}

TEST_CASE("extract_tar_gz: files and directories of a self-made archive", "[data]") {
  TempDir dir;
  UstarWriter tar;
  tar.add("set/", '5');
  tar.add("set/hello.txt", '0', "hello\n");
  tar.add("set/sub/big.bin", '0', big_contents());
  tar.add("set/empty", '0');
  tar.add("set/emptydir/", '5');
  mg_test::write_gzip(dir.file("a.tar.gz"), tar.finish());
  const std::string archive_sum = data::md5_hex(dir.file("a.tar.gz"));
  data::verify_md5(dir.file("a.tar.gz"), archive_sum);

  data::extract_tar_gz(dir.file("a.tar.gz"), dir.file("out"));
  const std::vector<uint8_t> hello = mg_test::read_file(dir.file("out/set/hello.txt"));
  REQUIRE(std::string(hello.begin(), hello.end()) == "hello\n");
  const std::vector<uint8_t> big = mg_test::read_file(dir.file("out/set/sub/big.bin"));
  REQUIRE(std::string(big.begin(), big.end()) == big_contents());
  REQUIRE(fs::file_size(dir.file("out/set/empty")) == 0);
  REQUIRE(fs::is_directory(dir.file("out/set/emptydir")));
  REQUIRE(!fs::exists(dir.file("out/set/hello.txt.part")));
}

TEST_CASE("extract_tar_gz: long names from the ustar prefix, GNU 'L' and pax 'x' entries", "[data]") {
  TempDir dir;
  const std::string deep = std::string(60, 'd') + "/" + std::string(60, 'e');  // 121 chars: over 100
  UstarWriter tar;
  tar.add(std::string(60, 'e') + "/p.txt", '0', "prefix", std::string(60, 'd'));
  tar.add("././@LongLink", 'L', deep + "/gnu.txt");
  tar.add("truncated-name", '0', "gnu");
  const std::string pax_record = "path=" + deep + "/pax.txt\n";
  // a record's length counts itself: 3 digits, a space, then "path=...\n"
  tar.add("PaxHeader", 'x', std::to_string(pax_record.size() + 4) + " " + pax_record);
  tar.add("ignored-name", '0', "pax");
  mg_test::write_gzip(dir.file("long.tar.gz"), tar.finish());
  data::extract_tar_gz(dir.file("long.tar.gz"), dir.file("out"));
  for (const auto& [name, contents] : {std::pair<std::string, std::string>{"p.txt", "prefix"},
                                       {"gnu.txt", "gnu"}, {"pax.txt", "pax"}}) {
    const std::vector<uint8_t> bytes = mg_test::read_file(dir.file("out/" + deep + "/" + name));
    REQUIRE(std::string(bytes.begin(), bytes.end()) == contents);
  }
  REQUIRE(!fs::exists(dir.file("out/truncated-name")));
  REQUIRE(!fs::exists(dir.file("out/ignored-name")));
}

TEST_CASE("extract_tar_gz: refuses unsafe and broken archives", "[data]") {
  TempDir dir;
  const std::string archive = dir.file("bad.tar.gz"), out = dir.file("out");
  SECTION("a .. component") {
    UstarWriter tar;
    tar.add("set/../../evil.txt", '0', "x");
    mg_test::write_gzip(archive, tar.finish());
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out), Contains("\"..\" component"));
    REQUIRE(!fs::exists(dir.file("evil.txt")));
  }
  SECTION("an absolute path") {
    UstarWriter tar;
    tar.add("/tmp/moegrad-evil.txt", '0', "x");
    mg_test::write_gzip(archive, tar.finish());
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out),
                        Contains("absolute path \"/tmp/moegrad-evil.txt\""));
  }
  SECTION("a symbolic link") {
    UstarWriter tar;
    tar.add("link", '2');
    mg_test::write_gzip(archive, tar.finish());
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out), Contains("has type '2'"));
  }
  SECTION("a truncated archive leaves no partial file") {
    UstarWriter tar;
    tar.add("big.bin", '0', big_contents());
    std::vector<uint8_t> bytes = tar.finish();
    bytes.resize(512 + 1024);  // cut inside big.bin's data
    mg_test::write_gzip(archive, bytes);
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out), Contains("inside entry \"big.bin\""));
    REQUIRE(!fs::exists(dir.file("out/big.bin")));
    REQUIRE(!fs::exists(dir.file("out/big.bin.part")));
  }
  SECTION("a truncated gzip stream") {
    UstarWriter tar;
    std::string noise;
    for (int i = 0; i < 200000; ++i) noise += static_cast<char>(i * 2654435761u >> 21);
    tar.add("noise.bin", '0', noise);
    mg_test::write_gzip(archive, tar.finish());
    std::vector<uint8_t> compressed = mg_test::read_file(archive);
    compressed.resize(compressed.size() / 2);
    mg_test::write_file(archive, compressed);
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out), Contains("corrupt or truncated"));
  }
  SECTION("a corrupted header") {
    UstarWriter tar;
    tar.add("a.txt", '0', "abc");
    std::vector<uint8_t> bytes = tar.finish();
    bytes[10] ^= 1;
    mg_test::write_gzip(archive, bytes);
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out),
                        Contains("header checksum mismatch at byte offset 0"));
  }
  SECTION("not there") {
    REQUIRE_THROWS_WITH(data::extract_tar_gz(archive, out), Contains("missing archive " + archive));
  }
}

TEST_CASE("ensure_cifar100: present folder, offline recipe, checksum of a placed archive", "[data]") {
  TempDir root;
  const std::string folder = root.file("cifar-100-binary"), archive = root.file("cifar-100-binary.tar.gz");
  SECTION("offline without the archive says what to download and where") {
    REQUIRE_THROWS_WITH(data::ensure_cifar100(root.path(), false),
                        Contains("downloading is off") && Contains(data::kCifar100Url) &&
                            Contains(data::kCifar100Md5) && Contains(archive) &&
                            Contains("tar -xzf cifar-100-binary.tar.gz -C '" + root.path() + "'"));
  }
  SECTION("an archive with the wrong sum is rejected, naming both sums") {
    mg_test::write_text(archive, "not the archive");
    REQUIRE_THROWS_WITH(data::ensure_cifar100(root.path(), false),
                        Contains("has MD5 " + data::md5_hex_of("not the archive")) &&
                            Contains(std::string("expected ") + data::kCifar100Md5) &&
                            Contains(data::kCifar100Url));
  }
  SECTION("an unpacked folder is used as it is") {
    mg_test::write_text(folder + "/train.bin", "");
    mg_test::write_text(folder + "/test.bin", "");
    REQUIRE(data::ensure_cifar100(root.path(), true) == folder);
  }
}
