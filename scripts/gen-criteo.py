#!/usr/bin/env python3
"""Writes a Criteo-Kaggle-format TSV with a learnable signal, optionally with edge cases.

    scripts/gen-criteo.py data/criteo/gen.tsv --lines 200000
    scripts/gen-criteo.py /tmp/c.tsv --lines 3000 --edge-cases --seed 7
    scripts/gen-criteo.py /tmp/c.tsv.gz --lines 1000 --crlf all      # gzip by the name

Each line is `label \\t I1..I13 \\t C1..C26` (tern's data.source criteo; the format is in
src/trainer/workloads/dlrm/criteo_format.h). The label is Bernoulli(sigmoid(logit)) with

    logit = bias + 1.2 * sum_{t < 6} w_t[c_t] / sqrt(6) + sum_{i in I1,I3,I5} a_i * z_i

where c_t is the category drawn for table t (skewed: a few values are frequent), w_t[.] ~ N(0,1)
fixed by the seed, and z_i the standardised log(1 + max(I_i, 0)) (the transform tern applies),
so a DLRM that learns embeddings for C1..C6 and weights for I1, I3, I5 reaches a test AUC well
above 0.5 (the Bayes-optimal AUC is printed). Everything is a function of --seed.

Well-formed lines already carry what real Criteo data has: empty integer and categorical
fields (--empty-rate) and negative integers in I2 (--negative-rate; tern clamps them to 0).
--edge-cases adds the rest: CRLF on some lines, no newline after the last line, and malformed
lines (--malformed-rate, default 0.01 with --edge-cases) of every kind tern counts: overlong,
nul, field_count (a field missing or extra, an empty line), label, integer (not -?[0-9]+ or out
of the int64 range), category (not 1-16 hex digits). Each malformed line has exactly one
defect, the one tern reports for it.

Prints one JSON object: lines, valid, malformed, malformed_by_kind, first_malformed_lines (1-based
line numbers), positive_rate, bayes_auc. Python 3 standard library only.
"""
import argparse
import gzip
import json
import math
import random
import sys

INT_FIELDS = 13
CAT_FIELDS = 26
SIGNAL_TABLES = 6
SIGNAL_INTS = (0, 2, 4)  # I1, I3, I5
KINDS = ("overlong", "nul", "field_count", "label", "integer", "category")
# The longest well-formed line (criteo_format.h kCriteoMaxLineBytes).
MAX_LINE_BYTES = 1 + INT_FIELDS * 20 + CAT_FIELDS * 16 + (INT_FIELDS + CAT_FIELDS)


def positive_int(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %s" % text)
    return v


def rate(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1], got %s" % text)
    return v


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="the file to write (.gz: gzip)")
    p.add_argument("--lines", type=positive_int, default=10000, help="lines to write (default 10000)")
    p.add_argument("--seed", type=int, default=1, help="every random choice follows it (default 1)")
    p.add_argument("--vocab", type=positive_int, default=400,
                   help="distinct values of the largest categorical field (default 400)")
    p.add_argument("--empty-rate", type=rate, default=0.05, help="share of empty fields (default 0.05)")
    p.add_argument("--negative-rate", type=rate, default=0.05,
                   help="share of lines whose I2 is negative, -1..-3 as in Criteo (default 0.05)")
    p.add_argument("--edge-cases", action="store_true",
                   help="CRLF on some lines, no final newline, malformed lines (--malformed-rate 0.01)")
    p.add_argument("--crlf", choices=("none", "some", "all"), default=None,
                   help="CRLF line endings (default: some with --edge-cases, else none)")
    p.add_argument("--malformed-rate", type=rate, default=None,
                   help="share of malformed lines (default: 0.01 with --edge-cases, else 0)")
    p.add_argument("--no-final-newline", action="store_true", help="no newline after the last line")
    p.add_argument("--bias", type=float, default=-1.0, help="the logit's bias (default -1: about 30 %% clicks)")
    a = p.parse_args(argv)
    if a.crlf is None:
        a.crlf = "some" if a.edge_cases else "none"
    if a.malformed_rate is None:
        a.malformed_rate = 0.01 if a.edge_cases else 0.0
    a.final_newline = not (a.no_final_newline or a.edge_cases)
    return a


def exact_auc(scores, labels):
    """Mann-Whitney AUC with ties counted half (the measure tern's evaluate() reports)."""
    pairs = sorted(zip(scores, labels))
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return 0.5
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2.0  # ranks i+1..j
        rank_sum += avg_rank * sum(l for _, l in pairs[i:j])
        i = j
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


class Generator:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        r = random.Random(a.seed * 7919 + 1)
        # Table t has vocab[t] values (some tables small, some large, like Criteo's), each a
        # fixed 32-bit hex id; the signal tables' values carry weights w_t[k].
        self.vocab = [max(2, int(a.vocab * f)) for f in (1.0, 0.5, 0.25, 0.1, 0.05, 0.02) * 5][:CAT_FIELDS]
        self.ids = [[r.getrandbits(32) for _ in range(v)] for v in self.vocab]
        self.weights = [[r.gauss(0.0, 1.0) for _ in range(self.vocab[t])] for t in range(SIGNAL_TABLES)]
        # Integer i is floor(exp(N(mu_i, 1.1))) - 1: a count; its transform log1p has about
        # mean mu_i and sd 1, so z_i = (log1p(x) - mu_i) standardises it roughly.
        self.mu = [r.uniform(0.5, 3.0) for _ in range(INT_FIELDS)]
        self.coef = {i: r.choice((-1.0, 1.0)) * r.uniform(0.6, 1.0) for i in SIGNAL_INTS}

    def well_formed(self):
        """(fields as strings, label, logit)."""
        rng, a = self.rng, self.a
        ints, logit = [], a.bias
        for i in range(INT_FIELDS):
            if rng.random() < a.empty_rate:
                ints.append("")
                continue
            x = int(math.exp(rng.gauss(self.mu[i], 1.1))) - 1
            if i == 1 and rng.random() < a.negative_rate:
                x = -rng.randint(1, 3)
            ints.append(str(x))
            if i in self.coef:
                logit += self.coef[i] * (math.log1p(max(x, 0)) - self.mu[i])
        cats, cat_signal = [], 0.0
        for t in range(CAT_FIELDS):
            if rng.random() < a.empty_rate:
                cats.append("")
                continue
            k = min(self.vocab[t] - 1, int(self.vocab[t] * rng.random() ** 3))  # skewed to small k
            cats.append("%08x" % self.ids[t][k])
            if t < SIGNAL_TABLES:
                cat_signal += self.weights[t][k]
        logit += 1.2 * cat_signal / math.sqrt(SIGNAL_TABLES)
        label = 1 if rng.random() < 1.0 / (1.0 + math.exp(-logit)) else 0
        return [str(label)] + ints + cats, label, logit

    def malformed(self, kind):
        """A line (str) with exactly one defect, `kind`, by tern's order of checks."""
        rng = self.rng
        f, _, _ = self.well_formed()
        i = 1 + rng.randrange(INT_FIELDS)           # an integer field
        c = 1 + INT_FIELDS + rng.randrange(CAT_FIELDS)  # a categorical field
        if kind == "overlong":
            f[c] = "a" * (MAX_LINE_BYTES + 1 + rng.randrange(2000))
        elif kind == "nul":
            f[i] = (f[i] or "1") + "\0" + "2"
        elif kind == "field_count":
            choice = rng.randrange(3)
            if choice == 0:
                return ""  # an empty line
            if choice == 1:
                f.pop(rng.randrange(1, len(f)))
            else:
                f.insert(rng.randrange(1, len(f) + 1), "7")
        elif kind == "label":
            f[0] = rng.choice(("2", "-1", "", "0.5", "yes", "01", "1 "))
        elif kind == "integer":
            f[i] = rng.choice(("12a", "1.5", " 7", "+3", "--1", "0x10", "99999999999999999999", "-"))
        elif kind == "category":
            f[c] = rng.choice(("zz12ab34", "12345678901234567", "0x1f2e", "-1a2b", "g0000000", "12 34"))
        return "\t".join(f)


def main(argv):
    a = parse_args(argv)
    gen = Generator(a)
    counts = {k: 0 for k in KINDS}
    first_bad, scores, labels = [], [], []
    opener = gzip.open if a.out.endswith(".gz") else open
    try:
        out = opener(a.out, "wb")
    except OSError as e:
        print("gen-criteo: cannot write %s: %s" % (a.out, e.strerror), file=sys.stderr)
        return 1
    with out:
        for n in range(1, a.lines + 1):
            last_unterminated = n == a.lines and not a.final_newline
            if gen.rng.random() < a.malformed_rate:
                kind = KINDS[gen.rng.randrange(len(KINDS))]
                line = gen.malformed(kind)
                while line == "" and last_unterminated:  # no bytes at all: not a line
                    line = gen.malformed(kind)
                counts[kind] += 1
                if len(first_bad) < 10:
                    first_bad.append(n)
            else:
                fields, label, logit = gen.well_formed()
                line = "\t".join(fields)
                scores.append(logit)
                labels.append(label)
            crlf = a.crlf == "all" or (a.crlf == "some" and gen.rng.random() < 0.3)
            end = "" if last_unterminated else ("\r\n" if crlf else "\n")
            out.write((line + end).encode("latin-1"))
    malformed = sum(counts.values())
    print(json.dumps({
        "path": a.out,
        "lines": a.lines,
        "valid": a.lines - malformed,
        "malformed": malformed,
        "malformed_by_kind": counts,
        "first_malformed_lines": first_bad,
        "positive_rate": round(sum(labels) / max(1, len(labels)), 4),
        "bayes_auc": round(exact_auc(scores, labels), 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
