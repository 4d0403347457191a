// Readers for the CIFAR-10 and CIFAR-100 binary versions (Krizhevsky, "Learning Multiple Layers of
// Features from Tiny Images", 2009; layout in shared/data/DATASETS.md). `dir` is the unpacked folder:
// cifar-100-binary/ (train.bin, test.bin, fine/coarse_label_names.txt) or cifar-10-batches-bin/
// (data_batch_1..5.bin, test_batch.bin, batches.meta.txt). Each file's size, every record and every
// label is checked; an error names the file, the record and what was expected.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.hpp"

namespace mg::data {

// Fine labels, coarse labels (superclasses) and both name lists. The names come from
// fine_label_names.txt / coarse_label_names.txt (blank lines skipped) when present, otherwise from
// the built-in tables below.
ImageDataset read_cifar100(const std::string& dir, Split split);
// Train = data_batch_1..5.bin (50,000), Test = test_batch.bin (10,000); names from batches.meta.txt
// when present, otherwise the built-in table.
ImageDataset read_cifar10(const std::string& dir, Split split);

// The official tables (DATASETS.md): names by label, and CIFAR-100's fine label -> superclass.
const std::vector<std::string>& cifar100_fine_label_names();
const std::vector<std::string>& cifar100_coarse_label_names();
const std::vector<int32_t>& cifar100_fine_to_coarse();
const std::vector<std::string>& cifar10_label_names();

}  // namespace mg::data
