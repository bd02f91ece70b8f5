// SplitMix64: the one small, fully specified 64-bit generator of the code base (data shuffles,
// benchmark routing, synthetic tokens, random-init weights), so results match on every platform.
#pragma once

#include <cstdint>

namespace st {

// splitmix64 as published by Vigna (prng.di.unimi.it/splitmix64.c; Steele, Lea and Flood 2014):
// the state advances by the golden-ratio increment and each output is Mix(state). Output i
// (0-based) of the stream seeded with `s` is Mix(s + (i + 1) * kGolden). Every value is pinned
// by tests (file_io_test, data_test, random_source_test): changing a constant changes shuffle
// orders and exported weights. Not thread-safe (a plain value: copy it per thread).
class SplitMix64 {
 public:
  // 2^64 / phi, odd: the state increment.
  static constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

  explicit constexpr SplitMix64(uint64_t seed) : state_(seed) {}

  // The stateless finaliser: a bijection on 64-bit values whose outputs for consecutive inputs
  // pass BigCrush (a counter-based hash: Mix(key + i * kGolden) is element i - 1 of a stream).
  static constexpr uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // The next output; advances the state by kGolden.
  constexpr uint64_t Next() { return Mix(state_ += kGolden); }

  // Uniform in [0, bound) without modulo bias (rejection sampling); bound > 0.
  constexpr uint64_t Below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
    for (;;) {
      const uint64_t r = Next();
      if (r >= threshold) return r % bound;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace st
