"""Exercise 04, a solution: VAR's multi-scale residual quantization (without Phi)."""

import torch
import torch.nn.functional as F


def _codes(idx, codebook):  # (B, s, s) -> (B, C, s, s)
    return codebook[idx].permute(0, 3, 1, 2)


def _up(x, size):
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bicubic")


def residual_encode(f, codebook, scales):
    size, residual, tokens = f.shape[-1], f.clone(), []
    for s in scales:
        z = residual if s == size else F.interpolate(residual, size=(s, s), mode="area")
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = torch.cdist(flat, codebook).argmin(1).view(z.shape[0], s, s)
        residual = residual - _up(_codes(idx, codebook), size)
        tokens.append(idx)
    return tokens


def teacher_forcing_input(tokens, codebook, scales):
    size, f_hat, out = scales[-1], 0.0, []
    for k in range(len(scales) - 1):
        f_hat = f_hat + _up(_codes(tokens[k], codebook), size)
        s = scales[k + 1]
        out.append(F.interpolate(f_hat, size=(s, s), mode="area").flatten(2).transpose(1, 2))
    return torch.cat(out, dim=1)


def first_scale(f, codebook):
    # an area average down to 1 x 1 is the mean over the map; upsampling 1 x 1 gives that value everywhere
    mean = f.mean(dim=(2, 3))  # (B, C)
    token = torch.cdist(mean, codebook).argmin(1)
    return token, f - codebook[token][:, :, None, None]
