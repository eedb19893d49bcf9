"""make_tokenizer_fixtures: reference token ids, offsets and decodings.

Writes tests/fixtures/tokenizer/{smollm2,llama3,qwen3}.json: for a varied set
of texts, the ids and character offsets (Python code points of the original
string) that the reference tokenizer returns for
    tok(text, return_offsets_mapping=True)          (default add_special_tokens)
and tok.decode(ids) / tok.decode(ids, skip_special_tokens=True), plus a few
decodings of id sequences that cut a UTF-8 character in half.
tests/test_tokenizer*.c compare model/tokenizer*.c with these EXACTLY.

Run (from the repository root), in the reference env:
    ~/.cache/kvzap/refenv/bin/python tests/reference/make_tokenizer_fixtures.py
PyPI packages: transformers (5.x), tokenizers, gguf, numpy.
Inputs (scripts/fetch-assets puts them in ~/.cache/kvzap):
  - tokenizers/llama3, tokenizers/qwen3: real tokenizer.json +
    tokenizer_config.json; the reference is transformers' AutoTokenizer on
    that directory (checked against tokenizers.Tokenizer.from_file).
  - SmolLM2-135M-Instruct.Q4_1.gguf: no tokenizer.json ships with it.

SmolLM2 reference (why it is built by hand): the real HF SmolLM2 tokenizer.json
(HuggingFaceTB/SmolLM2-*) has normalizer null, pre_tokenizer
Sequence[Digits(individual_digits=true), ByteLevel(add_prefix_space=false,
trim_offsets=true, use_regex=true)], a ByteLevel decoder, a BPE model with the
same vocab/merges the GGUF carries, the 17 <|...|>/<...> control tokens as
special added tokens, and no BOS/EOS added on encode (llama.cpp agrees: the
GGUF says tokenizer.ggml.pre = "smollm", whose llama.cpp regexes are
"\\p{N}" then the GPT-2 regex; tokenizer.ggml.add_bos_token = false). We build
exactly that with the `tokenizers` library from the GGUF's vocab and merges.
transformers' own GGUF conversion (AutoTokenizer.from_pretrained(dir,
gguf_file=...)) does NOT: for tokenizer.ggml.pre "smollm" it builds a
GPT2Tokenizer whose pre-tokenizer is ByteLevel(use_regex=true) alone, WITHOUT
the Digits split. The two differ wherever a digit touches a space or another
digit-adjacent piece, e.g. "hello   1": real -> "hello","ĠĠĠ","1";
conversion -> "hello","ĠĠ","Ġ","1" (the GPT-2 " ?\\p{N}+" takes the last
space). This script prints every fixture text on which they disagree; the
fixtures follow the real tokenizer.
"""
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

CACHE = os.path.expanduser(os.environ.get("KVZAP_CACHE", "~/.cache/kvzap"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer")
GGUF = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")


def long_document():
    """~5,000 characters of mixed prose, code, numbers, scripts and emoji."""
    parts = [
        "The KV cache grows linearly with context length; pruning it well matters. ",
        "In 2024, models such as Llama-3.1-8B-Instruct handled 131072 tokens.\n\n",
        "def score(q, k):\r\n\treturn (q @ k.T) / math.sqrt(d)  # scaled dot-product\r\n",
        "Naïve café façade — “quoted” ‘text’ … and résumé.\n",
        "日本語のテキストとカタカナ、中文句子。한국어 문장입니다.\n",
        "Русский текст, العربية, हिन्दी भाषा.\n",
        "Emoji: 😀👍🏽🇺🇸👨‍👩‍👧‍👦 ❤️\u200d🔥\n",
        "    indented    spaces   and\ttabs\t\there   \n",
        "Numbers: 3.14159, 1,000,000, 0x1F600, ½ ² ٣ १२३ １２３.\n",
        "DON'T stop; it'S fine, I'M sure they'LL say WE'VE done it'd.\n",
    ]
    text = ""
    i = 0
    while len(text) < 5000:
        text += parts[i % len(parts)]
        i += 1
    return text[:5000]


TEXTS = [
    ("empty", ""),
    ("single_space", " "),
    ("prose", "The quick brown fox jumps over the lazy dog. It wasn't me, she said!"),
    ("code_tabs_crlf", "int main(void)\r\n{\r\n\tif (x == 1) {\r\n\t\treturn 0;\r\n\t}\r\n}\r\n"),
    ("python_code", "def f(x):\n    return x ** 2  # square\n\n\nprint(f(12))\n"),
    ("long_digits", "1234567890123 and 99999999 and 3.14159265358979 and 2024-01-31"),
    ("digits_spaces", "a 1 b  22 c   333 d\t4 e\n5 x1y2 v1.2.3"),
    ("many_spaces", "a          b                    c"),
    ("newlines", "line one\n\n\nline two\n\n\n\n"),
    ("trailing_spaces", "trailing spaces   "),
    ("leading_spaces", "   leading spaces"),
    ("only_newlines", "\n\n\n"),
    ("only_spaces", "        "),
    ("mixed_ws", " \t \n \r\n \x0b \x0c  x"),
    ("cjk", "日本語のテキスト。中文句子，还有标点！한국어 텍스트입니다"),
    ("emoji", "Emoji 😀 👍🏽 🇺🇸🇫🇷 👨‍👩‍👧‍👦 ❤️‍🔥 🏳️‍🌈 done"),
    ("combining", "cafe\u0301 e\u0301le\u0300ve A\u030a \u212b \u0344 a\u0323\u0307 a\u0307\u0323"),
    ("hangul_jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af 한글"),
    ("nfc_singletons", "\u2126 \u212a \u1e9b\u0323 \u0958 \ufb2c \u00c5"),
    ("special_chatml", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
    ("special_llama", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
    ("special_think", "<think>\nreasoning here\n</think>\n\nanswer <think></think>"),
    ("special_adjacent", "x<|im_start|><|im_start|>y <|endoftext|> <|im_end|"),
    ("special_partial", "<|im_start <|begin_of_text| <|endoftext|>tail"),
    ("contractions_case", "DON'T it'S I'M we'RE they'VE you'LL he'D 'S 's o'clock"),
    ("contractions_odd", "'ſ 'K don\u2019t I'ma 'll'd"),
    ("arabic", "مرحبا بالعالم، هذا نص عربي ١٢٣."),
    ("hindi", "नमस्ते दुनिया, यह हिन्दी पाठ है। १२३"),
    ("russian", "Привет, мир! Это русский текст: 2024 год."),
    ("exotic_ws", "a\u3000b\u00a0c\u2028d\u2029e\u0085f\u1680g\u180eh\u200bi\u2009j\u202fk\u205fl\ufeffm"),
    ("exotic_ws_runs", "x\u3000\u3000y \u00a0 z\u00a0\u00a0\u00a0w\u2028\u2028"),
    ("numerics", "Ⅻ ½ ² ٣ १२३ １２３ ⑦ 𝟙𝟚"),
    ("valid_odd_utf8", "\ufffd \ufdd0 \uffff \U0001ffff \U0010fffd \U0001f600 \U00020000 \u0000x"),
    ("punct_runs", "Hello!!! What??? ... --- (parens) [brackets] {braces} @#$%^&*"),
    ("urls", "https://example.com/path?q=1&r=two#frag email@example.org"),
    ("mixed_short", "Ünïcödé TEXT with MiXeD cAsE and_underscores and-dashes"),
    ("long_document", long_document()),
]


def fuzz_texts(n=120, seed=20240607):
    """Deterministic random strings over the hard parts of Unicode."""
    import random
    rng = random.Random(seed)
    units = [
        "a", "Z", "hello", "World", " ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", "'s", "'T", "'re", "'LL",
        "'", "\u2019", "0", "7", "123", "4567", ".", ",", "!", "?", "...", "--", "(", ")", "{", "}", "#", "_", "/",
        "\u00e9", "e\u0301", "\u0301", "\u0323\u0307", "\u1100\u1161", "\u11a8", "\ud55c", "\u65e5\u672c",
        "\u3002", "\u3000", "\u00a0", "\u2028", "\u0085", "\u180e", "\u200b", "\u200d", "\ufe0f", "\U0001f600",
        "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8", "\u0645\u0631", "\u0661\u0662", "\u0928\u092e\u0938",
        "\u0966", "\u00bd", "\u216b", "\u00b2", "\u017f", "\u212a", "\u212b", "\u0958", "\ufb2c", "\ufffd",
        "\U0010fffd", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<think>", "</think>",
        "<|im_start", "\u0410\u0431", "\u0ca8", "\u0e01\u0e32", "x", "\u00df", "\u0130", "\u03a3",
    ]
    out = []
    for i in range(n):
        k = rng.randint(1, 24)
        out.append((f"fuzz_{i:03d}", "".join(rng.choice(units) for _ in range(k))))
    return out


def gguf_vocab_merges(path):
    r = GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    types = r.fields["tokenizer.ggml.token_type"].contents()
    merges = r.fields["tokenizer.ggml.merges"].contents()
    return tokens, types, merges


def smollm2_reference():
    """The real SmolLM2 tokenizer, rebuilt from the GGUF (see the docstring)."""
    tokens, types, merges = gguf_vocab_merges(GGUF)
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None,
                              fuse_unk=False, byte_fallback=False))
    tk.normalizer = None
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tk.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tk.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    control = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
               for t, ty in zip(tokens, types) if ty == 3]
    tk.add_special_tokens(control)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>",
                                   clean_up_tokenization_spaces=False)
    return fast


def smollm2_transformers_gguf():
    return AutoTokenizer.from_pretrained(os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF))


def encode(tok, text):
    enc = tok(text, return_offsets_mapping=True)
    return enc["input_ids"], [list(o) for o in enc["offset_mapping"]]


def cut_char_decodes(tok, name_ids):
    """Decodings of prefixes that end inside a multi-byte character."""
    out = []
    for text in ["😀", "👨‍👩‍👧", "日本", "é"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for n in range(1, len(ids) + 1):
            out.append({"ids": ids[:n], "skip_special": False, "text": tok.decode(ids[:n])})
    ids = name_ids
    out.append({"ids": ids, "skip_special": True, "text": tok.decode(ids, skip_special_tokens=True)})
    out.append({"ids": [0, 1, 2, 3, 10, 100000000], "skip_special": False,
                "text": tok.decode([0, 1, 2, 3, 10])})
    return out


def build_cases(tok, check=None, check_name=""):
    cases = []
    diffs = []
    for name, text in TEXTS + fuzz_texts():
        ids, offs = encode(tok, text)
        case = {"name": name, "text": text, "ids": ids, "offsets": offs,
                "decoded": tok.decode(ids), "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)}
        cases.append(case)
        if check is not None:
            if isinstance(check, Tokenizer):
                e = check.encode(text)
                other = (e.ids, [list(o) for o in e.offsets])
            else:
                other = encode(check, text)
            if other != (ids, offs):
                diffs.append(name)
    if check is not None:
        print(f"  {check_name}: {'identical' if not diffs else 'DIFFERS on ' + ', '.join(diffs)}")
    return cases


def write(name, tok, source, extra):
    cases = build_cases(tok, *extra)
    special = [c for c in cases if c["name"] == "special_chatml"][0]["ids"]
    doc = {
        "model": name,
        "source": source,
        "vocab_size": len(tok),
        "bos_id": tok.bos_token_id,
        "eos_id": tok.eos_token_id,
        "cases": cases,
        "decode_cases": cut_char_decodes(tok, special),
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


SYNTH_TEXTS = [
    ("lstrip", " [LS] x a   [LS]b [LS][LS]"),
    ("rstrip", "[RS]   y [RS]\n\nz [RS]"),
    ("single_word", "word words sword word. (word) _word wordé"),
    ("normalized_added", "n\u0303am \u00f1am xn\u0303amx"),
    ("trim_spaces", "  hello  world  and   more   "),
    ("digits_contiguous", "12345 abc 6 x78y \u0661\u0662\u0663"),
    ("ignore_merges", "the quick brown fox jumps over the lazy dog"),
    ("specials_inside", "<s>inside</s> <s> x"),
]


def synthetic(out_dir):
    """A tiny trained byte-level BPE with the features the real models lack:
    ignore_merges, Digits(contiguous), lstrip / rstrip / single_word /
    normalized added tokens, a ByteLevel post-processor with trim_offsets and
    add_prefix_space, and BOS + EOS from TemplateProcessing."""
    from tokenizers import normalizers, trainers
    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>"], show_progress=False)
    corpus = [t for _, t in TEXTS + fuzz_texts()] * 3
    tk.train_from_iterator(corpus, trainer)
    d = json.loads(tk.to_str())
    d["model"]["ignore_merges"] = True
    tk = Tokenizer.from_str(json.dumps(d))
    tk.add_tokens([AddedToken("[LS]", lstrip=True, normalized=False), AddedToken("[RS]", rstrip=True, normalized=False),
                   AddedToken("word", single_word=True, normalized=False), AddedToken("\u00f1am", normalized=True)])
    bos, eos = tk.token_to_id("<s>"), tk.token_to_id("</s>")
    tk.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])])
    tk.decoder = decoders.ByteLevel()
    os.makedirs(out_dir, exist_ok=True)
    d = json.loads(tk.to_str())
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, indent=1)
    d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    with open(os.path.join(out_dir, "tokenizer_string_merges.json"), "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False, indent=1)
    cases = []
    for name, text in SYNTH_TEXTS + TEXTS[:20]:
        e = tk.encode(text)
        cases.append({"name": name, "text": text, "ids": e.ids, "offsets": [list(o) for o in e.offsets],
                      "decoded": tk.decode(e.ids, skip_special_tokens=False),
                      "decoded_skip_special": tk.decode(e.ids, skip_special_tokens=True)})
    doc = {"model": "synthetic", "source": "tokenizer/synthetic", "vocab_size": tk.get_vocab_size(),
           "bos_id": bos, "eos_id": None, "cases": cases, "decode_cases": []}
    path = os.path.join(OUT, "synthetic.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({len(cases)} cases) and {out_dir}/tokenizer*.json")


def main():
    synthetic(os.path.join(OUT, "synthetic"))
    for fam in ("llama3", "qwen3"):
        d = os.path.join(CACHE, "tokenizers", fam)
        tok = AutoTokenizer.from_pretrained(d)
        raw = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        print(f"{fam}: {type(tok).__name__}")
        write(fam, tok, f"tokenizers/{fam}", (raw, "vs tokenizers.Tokenizer.from_file"))
    print("smollm2: rebuilt from the GGUF")
    ref = smollm2_reference()
    conv = smollm2_transformers_gguf()
    write("smollm2", ref, os.path.basename(GGUF), (conv, "vs transformers' GGUF conversion"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
