"""Metrics: PSNR, SSIM, codebook usage / perplexity, fd_emoji (offline proxy) and rFID (torch-fidelity).

| metric     | what it compares                                  | better | needs                          |
|------------|---------------------------------------------------|--------|--------------------------------|
| psnr       | pixels, per image (dB)                            | higher | nothing                        |
| ssim       | local means / contrasts / structure, per image    | higher | pytorch-msssim                 |
| usage      | fraction of codes used                            | higher | nothing                        |
| perplexity | effective number of codes, exp(entropy)           | higher | nothing                        |
| fd_emoji   | Frechet distance of emoji-classifier features     | lower  | data/emoji_classifier.pt       |
| precision  | share of samples inside the real images' manifold | higher | features (emoji classifier)    |
| recall     | share of real images inside the samples' manifold | higher | features (emoji classifier)    |
| nearest    | each sample's closest training image, PSNR to it  | lower  | nothing (copies score > 30 dB) |
| rfid       | FID between images and reconstructions            | lower  | torch-fidelity + Inception     |
"""

import torch

from .models import Tokenizer
from .vq import usage_stats


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for images in [-1, 1] (B, 3, H, W) -> (B,).

    Computed on the [0, 1] scale, as usual: PSNR = 10 log10(1 / MSE). 20 dB is blurry, 30 dB is close.
    """
    check_pair(x, y)
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (B,), on the [0, 1] scale with the standard 11x11 Gaussian window.

    From the maintained `pytorch-msssim` package. For 32x32 images the window covers a third of the image,
    so SSIM here is coarser than on photographs.
    """
    from pytorch_msssim import ssim as _ssim
    check_pair(x, y)
    x01, y01 = (x.float().clamp(-1, 1) + 1) / 2, (y.float().clamp(-1, 1) + 1) / 2
    return _ssim(x01, y01, data_range=1.0, size_average=False)


def check_pair(x, y):
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected two image batches of the same shape (B, 3, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


# ------------------------------------------------------------------------------- Frechet distances

def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets.

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2),
    which is symmetric, so only symmetric eigendecompositions (float64) are needed.
    """
    a, b = feats_a.double(), feats_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, D) feature sets with N >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.t()), torch.cov(b.t())
    w, v = torch.linalg.eigh(s_a)
    sqrt_a = (v * w.clamp_min(0).sqrt()) @ v.t()
    tr_sqrt = torch.linalg.eigvalsh(sqrt_a @ s_b @ sqrt_a).clamp_min(0).sqrt().sum()
    return ((mu_a - mu_b).pow(2).sum() + s_a.trace() + s_b.trace() - 2 * tr_sqrt).item()


@torch.no_grad()
def emoji_features(images: torch.Tensor, classifier=None, batch_size: int = 256) -> torch.Tensor:
    from .emoji_classifier import load_emoji_classifier
    classifier = classifier or load_emoji_classifier()
    return torch.cat([classifier.features(images[i:i + batch_size].float().cpu())
                      for i in range(0, len(images), batch_size)])


def fd_emoji(images_a: torch.Tensor, images_b: torch.Tensor, classifier=None) -> float:
    """Frechet distance between emoji-classifier features of two image sets in [-1, 1]. A proxy for FID on
    the emoji data (lower is better; 0 for identical sets); not comparable to published FIDs."""
    from .emoji_classifier import load_emoji_classifier
    classifier = classifier or load_emoji_classifier()
    return frechet_distance(emoji_features(images_a, classifier), emoji_features(images_b, classifier))


def fd_emoji_ci(images, real, n_boot: int = 200, level: float = 0.95, seed: int = 0, classifier=None) -> tuple:
    """fd_emoji with a bootstrap confidence interval: (fd, low, high). Both sets are resampled with replacement
    n_boot times (features computed once) and the interval is fd -/+ z * the resampled distances' standard
    deviation (z = 1.96 for 95%). (The percentiles themselves would not do: a resample repeats images, which makes
    every resampled distance larger, so they can all lie above fd.) It says how much the number moves with the
    particular samples drawn: two models whose intervals overlap are not told apart by this many samples (a
    conservative reading). Compare values at the same number of samples only: fd itself shrinks as n grows (its
    estimate is biased upwards at small n), which the interval does not show. low is clipped at 0."""
    if n_boot < 2 or not 0 < level < 1:
        raise ValueError(f"n_boot must be at least 2 and level in (0, 1), e.g. 200 and 0.95; got {n_boot} and {level}")
    from .emoji_classifier import load_emoji_classifier
    classifier = classifier or load_emoji_classifier()
    fa, fb = emoji_features(images, classifier), emoji_features(real, classifier)
    g = torch.Generator().manual_seed(seed)
    boots = torch.tensor([frechet_distance(fa[torch.randint(len(fa), (len(fa),), generator=g)],
                                           fb[torch.randint(len(fb), (len(fb),), generator=g)])
                          for _ in range(n_boot)])
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2)).item()
    fd, spread = frechet_distance(fa, fb), z * boots.std().item()
    return fd, max(0.0, fd - spread), fd + spread


# ---------------------------------------------------------------- precision, recall, and copies

def knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """The distance from each feature vector (N, D) to its k-th nearest neighbour in the same set (itself excluded):
    the radius of the ball around it that the k-NN manifold estimate uses."""
    if not 1 <= k < len(feats):
        raise ValueError(f"k must be in [1, {len(feats) - 1}] for {len(feats)} feature vectors, got {k}")
    d = torch.cdist(feats.double(), feats.double())
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (distance 0)


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3) -> tuple:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991) of two feature sets (N, D):
    each set's manifold is the union of balls around its points, each as wide as the distance to that point's k-th
    nearest neighbour (k = 3 in the paper). precision = the share of fake points inside the real manifold (are the
    samples realistic?), recall = the share of real points inside the fake manifold (do the samples cover the
    data?). -> (precision, recall), both in [0, 1]."""
    def inside(points, centres, radii):
        return (torch.cdist(points.double(), centres.double()) <= radii[None]).any(1).double().mean().item()
    return (inside(fake_feats, real_feats, knn_radii(real_feats, k)),
            inside(real_feats, fake_feats, knn_radii(fake_feats, k)))


def emoji_precision_recall(images: torch.Tensor, real: torch.Tensor, k: int = 3, classifier=None) -> tuple:
    """precision_recall on emoji-classifier features of samples (images) and real images, both in [-1, 1]."""
    from .emoji_classifier import load_emoji_classifier
    classifier = classifier or load_emoji_classifier()
    return precision_recall(emoji_features(real, classifier), emoji_features(images, classifier), k)


@torch.no_grad()
def nearest_training_images(samples: torch.Tensor, train: torch.Tensor, batch_size: int = 256) -> tuple:
    """For each sample (B, 3, H, W) its closest image in `train` (N, 3, H, W) by pixel distance, both in [-1, 1]:
    -> (indices (B,), PSNR to it (B,) in dB). A memorising model draws near-copies (PSNR above ~30 dB); a model that
    generalises stays as far from the training set as new real images are (compare with the test split)."""
    check_pair(samples[:1], train[:1])
    flat = train.float().flatten(1)
    best_d, best_i = [], []
    for chunk in samples.float().flatten(1).split(batch_size):
        d = torch.cdist(chunk, flat).pow(2) / flat.shape[1]  # mean squared error in [-1, 1] units
        v, i = d.min(1)
        best_d.append(v), best_i.append(i)
    mse01 = torch.cat(best_d) / 4  # on the [0, 1] scale, as psnr()
    return torch.cat(best_i), 10 * torch.log10(1.0 / mse01.clamp_min(1e-10))


def rfid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID (Inception-v3 features, via torch-fidelity) between two image sets in [-1, 1].

    torch-fidelity downloads the Inception weights on first use; offline that fails with a clear error.
    """
    try:
        import torch_fidelity
    except ImportError:
        raise ImportError("rfid needs torch-fidelity: pip install -e '.[eval]'") from None

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    try:
        out = torch_fidelity.calculate_metrics(input1=Images(fake), input2=Images(real), fid=True, verbose=False,
                                               cuda=torch.cuda.is_available())
    except Exception as e:  # most often: no internet for the Inception weights
        raise RuntimeError(f"rFID failed ({type(e).__name__}: {e}). torch-fidelity downloads the Inception "
                           f"weights on first use, which needs internet; offline, use fd_emoji on emoji data") from e
    return float(out["frechet_inception_distance"])


def fd_for_dataset(images: torch.Tensor, real: torch.Tensor, dataset: str) -> tuple:
    """The notebooks' sample-quality score on any dataset -> (name, fd, low, high), lower is better.
    emoji: fd_emoji with its 95% bootstrap interval (offline, seconds on a CPU). cifar10, imagenet64: FID in
    Inception features (rfid, torch-fidelity; the weights download once), with no interval (nan). A smoke run
    (MINIVAR_SMOKE=1, the tests' notebooks: offline) measures those datasets in the emoji classifier's features
    instead, and says so in the name: a check that the code runs, not a score to compare with anything."""
    if dataset == "emoji":
        return ("fd_emoji", *fd_emoji_ci(images, real))
    from . import smoke
    if smoke():
        return (f"fd in emoji-classifier features (smoke run: FID of {dataset} needs the Inception weights)",
                *fd_emoji_ci(images, real))
    return "FID", rfid(real, images), float("nan"), float("nan")


# ---------------------------------------------------------------------------- tokenizer evaluation

def evaluate_model(model, loader, max_batches=None) -> dict:
    """What the training loop reports on the test set: a tokenizer's reconstruction metrics (evaluate_tokenizer
    below), a generator's own evaluate() (its test loss)."""
    if isinstance(model, Tokenizer):
        return evaluate_tokenizer(model, loader, model.device, max_batches)
    return model.evaluate(loader, max_batches)


@torch.no_grad()
def evaluate_tokenizer(model, loader, device="cpu", max_batches=None, fd=False) -> dict:
    """Test-set PSNR and SSIM of reconstructions (each image encoded and decoded once), codebook usage /
    perplexity over all tokens of the set (integer codes only), and (fd=True) fd_emoji between the test images
    and their reconstructions. Leaves the model in the mode it found it in."""
    was_training = model.training
    model.eval()
    psnrs, ssims, tokens, reals, recons = [], [], [], [], []
    for i, (images, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        images = images.to(device)
        codes = model.encode(images)  # a token map, a list of maps (one per scale), or float latents
        recon = model.decode(codes).float().clamp(-1, 1)
        psnrs.append(psnr(recon, images).cpu())
        ssims.append(ssim(recon, images).cpu())
        tokens += [c.flatten().cpu() for c in (codes if isinstance(codes, (list, tuple)) else [codes])]
        if fd:
            reals.append(images.cpu())
            recons.append(recon.cpu())
    model.train(was_training)
    result = {"psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item()}
    tokens = torch.cat(tokens)
    if not tokens.is_floating_point():
        stats = usage_stats(tokens, model.code_format()["codebook_size"])
        result.update(usage=stats["usage"].item(), perplexity=stats["perplexity"].item())
    if fd:
        result["fd_emoji"] = fd_emoji(torch.cat(reals), torch.cat(recons))
    return result
