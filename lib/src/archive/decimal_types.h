// The integer types the text and xml archives read and write as decimal numbers themselves (ReadDecimal,
// archive/bounded_archives.h; DirectWriter::Decimal, archive/direct_oarchives.h): M(T, ARG) for each of them. Boost
// reads and writes the character types as a short, and bool as itself. Internal.
#pragma once

#define EPOLLCR_FOR_EACH_DECIMAL_TYPE(M, ARG) \
  M(short, ARG)                               \
  M(unsigned short, ARG)                      \
  M(int, ARG)                                 \
  M(unsigned int, ARG)                        \
  M(long, ARG)                                \
  M(unsigned long, ARG)                       \
  M(long long, ARG)                           \
  M(unsigned long long, ARG)
