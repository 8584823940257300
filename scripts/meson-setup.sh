# Sourced by the scripts: configure a build directory once, reconfigure it on later runs.
# usage: setup_build DIR [meson options...]
setup_build() {
  local dir=$1
  shift
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" --wrap-mode=nodownload "$@"
  fi
}
