/*
 * dpl_half.h (tvm-deeploy): float16 is stored as IEEE binary16 bits and computed in float
 * (tvm_deeploy/program/half.py). TVM's C names the storage type `half` and calls these two conversions
 * (round to nearest, ties to even). Included by the standalone program's dpl_support.h, and by TVM's glue
 * of a deeploy build through `-include` (tvm_deeploy.EXPORT_OPTIONS).
 */
#ifndef DPL_HALF_H
#define DPL_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" { /* TVM's C, compiled as C++ by export_library, redeclares the conversions with C linkage */
#endif

typedef uint16_t half;

static inline float dpl_half_to_float(half h)
{
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
  float f;
  if (exponent == 0x1fu) { /* infinity, NaN (payload kept) */
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13); /* rebias: 127 - 15 */
  } else if (mantissa == 0) {
    bits = sign;
  } else { /* subnormal: mantissa * 2^-24, normalized */
    exponent = 113u;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline half dpl_float_to_half(float f)
{
  uint32_t bits, sign, exponent, mantissa, h, rest, halfway, shift;
  memcpy(&bits, &f, sizeof bits);
  sign = (bits >> 16) & 0x8000u;
  exponent = (bits >> 23) & 0xffu;
  mantissa = bits & 0x7fffffu;
  if (exponent == 0xffu) { /* infinity, NaN (kept quiet) */
    return (half)(sign | 0x7c00u | (mantissa ? 0x200u | (mantissa >> 13) : 0u));
  }
  if (exponent > 142u) { /* 2^16 and above */
    return (half)(sign | 0x7c00u);
  }
  if (exponent >= 113u) { /* normal: 10 of 23 mantissa bits; a carry may reach infinity, as it should */
    h = ((exponent - 112u) << 10) | (mantissa >> 13);
    rest = mantissa & 0x1fffu;
    halfway = 0x1000u;
  } else if (exponent >= 102u) { /* subnormal: units of 2^-24 */
    shift = 126u - exponent;
    h = (mantissa | 0x800000u) >> shift;
    rest = (mantissa | 0x800000u) & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1u);
  } else { /* below 2^-25: zero */
    return (half)sign;
  }
  if (rest > halfway || (rest == halfway && (h & 1u))) {
    ++h;
  }
  return (half)(sign | h);
}

#ifdef __cplusplus
}
#endif

#endif /* DPL_HALF_H */
