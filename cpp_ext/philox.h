// Philox4x32-10 counter-based generator (Salmon et al., SC'11) and the project's Gaussian noise.
//
//   float out[4]; sami::normal_block(seed, sample_index, step, element / 4, out);  // out[element % 4]
//
// Element j of sample `index` at sampler step `step` uses counter (j / 4, step, index, 0) and key
// (seed mod 2^32, seed div 2^32); the block's four words become four normals by Box-Muller in double,
// rounded to float. sami_rt/sampling/rng.py is the numpy twin; the two must agree bit for bit.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace sami {

inline std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, uint32_t k0, uint32_t k1) {
  constexpr uint64_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kW0;
      k1 += kW1;
    }
    const uint64_t p0 = kM0 * c[0], p1 = kM1 * c[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c = {hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0};
  }
  return c;
}

// Four standard normals of block `block` (elements 4*block .. 4*block+3).
inline void normal_block(uint64_t seed, uint32_t index, uint32_t step, uint32_t block, float out[4]) {
  const auto w = philox4x32_10({block, step, index, 0u}, static_cast<uint32_t>(seed),
                               static_cast<uint32_t>(seed >> 32));
  constexpr double kInv = 1.0 / 4294967296.0, kTwoPi = 6.283185307179586;
  double u[4];
  for (int i = 0; i < 4; ++i) u[i] = (static_cast<double>(w[i]) + 0.5) * kInv;
  const double r01 = std::sqrt(-2.0 * std::log(u[0])), r23 = std::sqrt(-2.0 * std::log(u[2]));
  const double t01 = kTwoPi * u[1], t23 = kTwoPi * u[3];
  out[0] = static_cast<float>(r01 * std::cos(t01));
  out[1] = static_cast<float>(r01 * std::sin(t01));
  out[2] = static_cast<float>(r23 * std::cos(t23));
  out[3] = static_cast<float>(r23 * std::sin(t23));
}

}  // namespace sami
