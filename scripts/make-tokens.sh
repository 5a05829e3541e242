#!/usr/bin/env bash
# Turns the quotations of Debian's `fortunes` package into byte-level token files for the
# example language model (configs/jobs/tinylm*.yaml, data.source: tokens):
#
#   scripts/make-tokens.sh              # data/tinylm/train.u16 and data/tinylm/test.u16
#   scripts/make-tokens.sh /tmp/tokens  # the same files in another directory
#   scripts/make-tokens.sh data/tinylm 10    # hold out the last 10 % instead of 2 %
#   TERN_SKIP_APT=1 scripts/make-tokens.sh   # never touch apt (fails if fortunes is missing)
#
# Why `fortunes`: it is plain English text (quotations, jokes, poems, definitions) in a Debian
# package, a few MB (about 2.6 MB of text: enough that a 1M-parameter character model does not
# simply memorise it in a few minutes of training, small enough to ship and read in a second),
# and it is DFSG-free (in Debian main), so anyone can install it with apt and reproduce the
# exact token files; no download from outside Debian.
#
# Format: every byte of the text is one token (vocab_size 256), written as a little-endian
# uint16 (token_dtype: uint16). The files of /usr/share/games/fortunes are read in name order
# with the `%` lines that separate quotations left out; the first 98 % of the bytes (by default) are
# the training file, the rest (from the next line start on) the test file. Prints token counts.
# tern evaluates every window of the test file, so a smaller test split (the second argument,
# in percent) makes each evaluation proportionally cheaper.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${1:-data/tinylm}
TEST_PERCENT=${2:-2}
if ! [[ "$TEST_PERCENT" =~ ^[0-9]+$ ]] || [ "$TEST_PERCENT" -lt 1 ] || [ "$TEST_PERCENT" -gt 50 ]; then
  echo "make-tokens: the test percentage (second argument) must be a whole number from 1 to 50," \
       "got '$TEST_PERCENT'" >&2
  exit 2
fi
CORPUS_DIR=/usr/share/games/fortunes
PACKAGE=fortunes

if ! dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "install ok installed"; then
  if [ -n "${TERN_SKIP_APT:-}" ]; then
    echo "make-tokens: the Debian package '$PACKAGE' is not installed and TERN_SKIP_APT is set;" \
         "install it with: apt-get install $PACKAGE" >&2
    exit 1
  fi
  echo "make-tokens: installing $PACKAGE"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null
fi

python3 - "$CORPUS_DIR" "$OUT_DIR" "$TEST_PERCENT" <<'EOF'
import array
import os
import sys

corpus_dir, out_dir = sys.argv[1], sys.argv[2]
TEST_FRACTION = int(sys.argv[3]) / 100.0

# The quotation files: regular files, not the strfile indexes (*.dat) or the *.u8 symlinks.
try:
    names = sorted(n for n in os.listdir(corpus_dir)
                   if not n.endswith(".dat") and not os.path.islink(os.path.join(corpus_dir, n))
                   and os.path.isfile(os.path.join(corpus_dir, n)))
except OSError as e:
    sys.exit("make-tokens: cannot list %s: %s" % (corpus_dir, e.strerror))
if not names:
    sys.exit("make-tokens: no fortune files in %s (is the fortunes package complete?)" % corpus_dir)

text = bytearray()
for name in names:
    with open(os.path.join(corpus_dir, name), "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        if line.rstrip(b"\r\n") == b"%":
            continue  # the separator between two quotations
        text += line
    if text and not text.endswith(b"\n"):
        text += b"\n"  # a file whose last line has no newline does not run into the next

# Split at the first line start at or after 1 - TEST_FRACTION, so the test text begins with a
# whole line.
cut = int(len(text) * (1 - TEST_FRACTION))
nl = text.find(b"\n", cut)
cut = len(text) if nl < 0 else nl + 1
if cut >= len(text):
    sys.exit("make-tokens: the corpus is too small to hold out a test split")


def write_tokens(path, data):
    # (A list, not the bytes themselves: array(bytes) would reinterpret byte pairs as uint16s.)
    tokens = array.array("H", list(data))  # one uint16 per byte: ids 0..255
    if sys.byteorder != "little":
        tokens.byteswap()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        tokens.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # never a half-written token file under the final name
    return len(tokens)


try:
    os.makedirs(out_dir, exist_ok=True)
    train_path = os.path.join(out_dir, "train.u16")
    test_path = os.path.join(out_dir, "test.u16")
    n_train = write_tokens(train_path, text[:cut])
    n_test = write_tokens(test_path, text[cut:])
except OSError as e:
    sys.exit("make-tokens: cannot write %s: %s" % (e.filename or out_dir, e.strerror))
print("make-tokens: %d files of %s, %d bytes of text (separator lines removed)"
      % (len(names), corpus_dir, len(text)))
print("make-tokens: %s: %d tokens" % (train_path, n_train))
print("make-tokens: %s: %d tokens" % (test_path, n_test))
print("make-tokens: token_dtype uint16, vocab_size 256, ids %d..%d"
      % (min(text), max(text)))
EOF
