// EPOLLCR_TEST_SANITIZED is 1 in a build under AddressSanitizer or ThreadSanitizer, where the tests that start many
// processes or run thousands of traces scale their defaults down. gcc names the sanitizer with a macro, clang answers
// __has_feature.
#pragma once

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define EPOLLCR_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define EPOLLCR_TEST_SANITIZED 1
#endif
#endif
#ifndef EPOLLCR_TEST_SANITIZED
#define EPOLLCR_TEST_SANITIZED 0
#endif
