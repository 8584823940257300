# Sourced by the scripts: configure a build directory once, reconfigure it on later runs.
# usage: [CXX=...] setup_build DIR [meson options...]
# A directory configured with another C++ compiler than $CXX names is set up afresh (meson cannot switch compilers).
setup_build() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ] && [ -n "${CXX:-}" ] && [ -f "$dir/compile_commands.json" ] &&
     ! python3 -c 'import json, os, sys
commands = json.load(open(sys.argv[1]))
sys.exit(bool(commands) and os.path.basename(commands[0]["command"].split()[0]) != sys.argv[2])' \
       "$dir/compile_commands.json" "$(basename "$CXX")"; then
    rm -rf "$dir"
  fi
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" --wrap-mode=nodownload "$@"
  fi
}

# The clang build that scripts/test's sanitizer stage tests and scripts/fuzz fuzzes: AddressSanitizer +
# UndefinedBehaviorSanitizer, libFuzzer's coverage instrumentation everywhere and the fuzz_<target> executables, clang's
# thread-safety analysis as errors, -O1 (AddressSanitizer's advice) and line tables only (-g1: stack traces keep file
# and line, the build is much quicker than with full debug information). One build for the three saves CI two builds.
sanitizer_build=build-asan
setup_sanitizer_build() {
  CXX=clang++ setup_build "$sanitizer_build" --werror -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbenchmarks=false -Dfuzzing=true -Doptimization=1 -Ddebug=false \
    "-Dcpp_args=['-g1','-fsanitize=fuzzer-no-link','-Wthread-safety','-Wthread-safety-beta']"
}
