// ensure_cifar100: finds the unpacked CIFAR-100 binary folder, or downloads the archive with the
// `curl` command (the only tool used; checksum and unpacking are in-process, md5.cpp and
// tar_gz.cpp), checks its MD5 and unpacks it. Without a download, the error is a recipe.
#include "data/fetch.hpp"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include "data/file_util.hpp"
#include "engine/error.hpp"

namespace mg::data {
namespace {

namespace fs = std::filesystem;

// One shell word: single quotes, with each ' written as '\'' (POSIX sh quoting), so no path or
// URL character is interpreted by the shell.
std::string shell_quote(const std::string& word) {
  std::string quoted = "'";
  for (char ch : word) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

bool holds_cifar100(const std::string& folder) {
  return io::is_regular_file(io::path_join(folder, "train.bin")) &&
         io::is_regular_file(io::path_join(folder, "test.bin"));
}

std::string manual_instructions(const std::string& root, const std::string& archive) {
  return detail::concat("download ", kCifar100Url, " (MD5 ", kCifar100Md5, ") and either put it at ", archive,
                        " (it is then checked and unpacked on the next run) or unpack it yourself with "
                        "`tar -xzf cifar-100-binary.tar.gz -C ", shell_quote(root), "` so that ",
                        io::path_join(io::path_join(root, "cifar-100-binary"), "train.bin"),
                        " and test.bin exist");
}

void download(const std::string& archive, const std::string& instructions) {
  MG_CHECK(std::system("command -v curl >/dev/null 2>&1") == 0,
           "ensure_cifar100: the `curl` command is not installed, so CIFAR-100 cannot be downloaded; ",
           instructions);
  const std::string partial = archive + ".part";
  const std::string command = "curl --fail --location --retry 3 --connect-timeout 30 --silent --show-error "
                              "--output " + shell_quote(partial) + " " + shell_quote(kCifar100Url);
  const int status = std::system(command.c_str());
  if (status != 0) {
    std::error_code ignored;
    fs::remove(partial, ignored);
    const int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;  // -1: killed by a signal
    throw Error(detail::concat("ensure_cifar100: `", command, "` failed (curl exit code ", exit_code,
                               "; offline?); ", instructions));
  }
  fs::rename(partial, archive);
}

}  // namespace

std::string ensure_cifar100(const std::string& root, bool allow_download) {
  const std::string folder = io::path_join(root, "cifar-100-binary");
  if (holds_cifar100(folder)) return folder;
  const std::string archive = io::path_join(root, "cifar-100-binary.tar.gz");
  const std::string instructions = manual_instructions(root, archive);
  if (!io::is_regular_file(archive)) {
    MG_CHECK(allow_download, "ensure_cifar100: CIFAR-100 is not in ", folder, " and downloading is off; ",
             instructions);
    fs::create_directories(root);
    download(archive, instructions);
  }
  try {
    verify_md5(archive, kCifar100Md5);
  } catch (const Error& e) {
    throw Error(detail::concat("ensure_cifar100: ", e.what(), "; ", instructions));
  }
  extract_tar_gz(archive, root);
  MG_CHECK(holds_cifar100(folder), "ensure_cifar100: ", archive, " unpacked, but ", folder,
           " lacks train.bin or test.bin; ", instructions);
  return folder;
}

}  // namespace mg::data
