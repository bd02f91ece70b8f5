# Debian 12's torch 1.13 predates the float8 / unsigned dtypes llama.cpp's converter names in a
# table; placeholders let it import (the check's checkpoint holds only float32 tensors).
try:
    import torch
    for _n in ['float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz', 'float8_e5m2fnuz', 'uint16', 'uint32', 'uint64']:
        if not hasattr(torch, _n):
            setattr(torch, _n, type('_Missing_' + _n, (), {})())
except ImportError:
    pass
