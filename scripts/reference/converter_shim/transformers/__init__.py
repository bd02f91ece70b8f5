# A stand-in for the two `transformers` entry points llama.cpp's convert_hf_to_gguf.py calls,
# for a by-hand check only (Debian 12 has no python3-transformers, pip has no index here).
# AutoConfig reads config.json; AutoTokenizer's encode is Hugging Face's own Rust tokenizers
# (npm @anush008/tokenizers through scripts/reference/encode.mjs), vocab and added tokens come
# from tokenizer.json as transformers reads them.
import json, os, subprocess, tempfile

REF = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'encode.mjs')

class _Cfg:
    def __init__(self, d): self._d = d
    def to_dict(self): return dict(self._d)

class AutoConfig:
    @staticmethod
    def from_pretrained(path, **kw):
        with open(os.path.join(path, 'config.json')) as f:
            return _Cfg(json.load(f))

class _Added:
    def __init__(self, t):
        self.content = t['content']; self.special = t.get('special', False)
        self.normalized = t.get('normalized', False)

def _bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

class _Tok:
    def __init__(self, path):
        self.path = os.path.join(path, 'tokenizer.json')
        with open(self.path) as f:
            j = json.load(f)
        self.vocab = dict(j['model']['vocab'])
        self.added_tokens_decoder = {}
        self._added = {}
        for t in j.get('added_tokens', []):
            self.vocab[t['content']] = t['id']
            self._added[t['content']] = t['id']
            self.added_tokens_decoder[t['id']] = _Added(t)
        self._rev = {i: s for s, i in self.vocab.items()}
        self._u2b = {u: b for b, u in _bytes_to_unicode().items()}
    def get_vocab(self): return dict(self.vocab)
    def get_added_vocab(self): return dict(self._added)
    def encode(self, text, add_special_tokens=True, **kw):
        with tempfile.NamedTemporaryFile('w', suffix='.txt', delete=False, encoding='utf-8') as f:
            f.write(text); name = f.name
        try:
            out = subprocess.run(['node', REF, self.path, name], check=True, capture_output=True, text=True).stdout
        finally:
            os.unlink(name)
        return json.loads(out)
    def decode(self, ids, **kw):
        out = b''
        for i in ids:
            s = self._rev[i]
            if s in self._added: out += s.encode('utf-8')
            else: out += bytes(self._u2b[c] for c in s)
        return out.decode('utf-8', errors='replace')

class AutoTokenizer:
    @staticmethod
    def from_pretrained(path, **kw): return _Tok(path)
