// Getting CIFAR-100 onto disk: download with the `curl` command, MD5 check (RFC 1321, computed
// in-process) and unpacking of the .tar.gz (zlib + a small POSIX ustar reader) without any tool
// beyond curl. Offline, ensure_cifar100 says exactly what to fetch and where to put it.
#pragma once
#include <string>
#include <string_view>

namespace mg::data {

inline constexpr const char* kCifar100Url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
inline constexpr const char* kCifar100Md5 = "03b5dce01913d631647c71ecec9e9cb8";

std::string md5_hex(const std::string& path);    // of a file's contents, 32 lowercase hex digits
std::string md5_hex_of(std::string_view bytes);  // of bytes in memory (RFC 1321 test vectors)
// Throws mg::Error naming the file, the expected and the computed sum when they differ.
void verify_md5(const std::string& path, const std::string& expected_hex);

// Unpacks a gzipped ustar archive into dest_dir (created when missing): regular files and
// directories; absolute paths, ".." components, links and truncated archives are errors.
void extract_tar_gz(const std::string& archive, const std::string& dest_dir);

// If <root>/cifar-100-binary holds train.bin and test.bin, returns that folder. Otherwise, when
// allow_download, fetches kCifar100Url with curl into root, checks kCifar100Md5, unpacks it and
// returns the folder; offline (or curl missing/failing) it throws an error that says what to
// download, from where, and where to put it.
std::string ensure_cifar100(const std::string& root, bool allow_download);

}  // namespace mg::data
