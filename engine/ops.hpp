// Every op of the engine, for code that wants them all.
#pragma once
#include "engine/ops/attention.hpp"
#include "engine/ops/conv.hpp"
#include "engine/ops/elementwise.hpp"
#include "engine/ops/grouped_mlp.hpp"
#include "engine/ops/index.hpp"
#include "engine/ops/linalg.hpp"
#include "engine/ops/loss.hpp"
#include "engine/ops/norm.hpp"
#include "engine/ops/pool.hpp"
#include "engine/ops/reduce.hpp"
