import pytest
import torch

from minivar.data import load_dataset
from minivar.metrics import (
    emoji_precision_recall,
    fd_emoji,
    frechet_distance,
    knn_radii,
    nearest_training_images,
    precision_recall,
    psnr,
    rfid,
    ssim,
)


def test_psnr_hand_computation():
    x = torch.zeros(2, 3, 4, 4)
    y = x + 0.2  # difference 0.1 on the [0, 1] scale -> MSE 0.01 -> 20 dB
    torch.testing.assert_close(psnr(x, y), torch.tensor([20.0, 20.0]))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:1])


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert (ssim(x, noisy) < 0.9).all()


def test_frechet_distance_of_gaussians_has_the_closed_form():
    torch.manual_seed(0)
    a = torch.randn(20000, 3, dtype=torch.float64)
    b = torch.randn(20000, 3, dtype=torch.float64) * 2 + 1  # mean 1, covariance 4 I
    # ||mu||^2 = 3, Tr(I + 4I - 2 * 2I) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_emoji_separates_real_from_damaged_images():
    test = load_dataset("emoji", "test")
    train = load_dataset("emoji", "train")
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.stack([train[i][0] for i in range(0, 3000, 8)])
    blurred = torch.nn.functional.avg_pool2d(x, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    same_distribution = fd_emoji(x, y)
    assert same_distribution < fd_emoji(x, blurred)
    assert fd_emoji(x, blurred) < fd_emoji(x, torch.rand_like(x) * 2 - 1)


def test_emoji_classifier_is_shipped_with_its_accuracy():
    from minivar.checkpoint import load_checkpoint
    from minivar.emoji_classifier import WEIGHTS
    ckpt = load_checkpoint(WEIGHTS)
    assert ckpt["test_accuracy"] > 0.8  # majority class is 0.59


def test_rfid_offline_error_names_the_way_out(monkeypatch):
    torch_fidelity = pytest.importorskip("torch_fidelity")

    def no_internet(**kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", no_internet)
    with pytest.raises(RuntimeError, match="needs internet.*fd_emoji"):
        rfid(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))


def test_fd_emoji_confidence_interval_brackets_the_value_and_narrows_with_more_samples():
    from minivar.data import load_dataset
    from minivar.metrics import fd_emoji_ci
    data = load_dataset("emoji", "train")
    real = torch.stack([data[i][0] for i in range(0, 3000, 3)])  # 1000 real emoji
    fake = torch.stack([data[i][0] for i in range(1, 3000, 3)]).roll(1, dims=-1)  # others, shifted by a pixel
    value, low, high = fd_emoji_ci(fake, real, n_boot=50)
    assert low < value < high
    small = fd_emoji_ci(fake[:200], real[:200], n_boot=50)
    assert (small[2] - small[1]) > (high - low)  # fewer samples: a wider interval
    far = fd_emoji_ci(fake.flip(-2), real, n_boot=50)  # upside down: told apart, the intervals do not overlap
    assert far[1] > high
    with pytest.raises(ValueError, match="n_boot must be at least 2"):
        fd_emoji_ci(fake, real, n_boot=1)


def test_knn_radii_exclude_the_point_itself():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(pts, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(pts, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="k must be in"):
        knn_radii(pts, 4)


def test_precision_and_recall_tell_realism_from_coverage():
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    real = modes.repeat_interleave(200, 0) + 0.5 * torch.randn(800, 2, generator=g)
    same = modes.repeat_interleave(200, 0) + 0.5 * torch.randn(800, 2, generator=g)
    half = modes[:2].repeat_interleave(400, 0) + 0.5 * torch.randn(800, 2, generator=g)  # realistic, half the modes
    off = modes.repeat_interleave(200, 0) + 5.0 + 0.5 * torch.randn(800, 2, generator=g)  # between the modes
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, half)
    assert p > 0.9 and 0.4 < r < 0.6
    p, r = precision_recall(real, off)
    assert p < 0.05 and r < 0.05
    assert precision_recall(real, real) == (1.0, 1.0)


def test_emoji_precision_recall_and_nearest_copies_on_real_images():
    test = load_dataset("emoji", "test", image_size=32)
    train = load_dataset("emoji", "train", image_size=32)
    real = torch.stack([test[i][0] for i in range(len(test))])
    pool = torch.stack([train[i][0] for i in range(0, len(train), 3)])
    p, r = emoji_precision_recall(real[:180], real[180:])  # two halves of the same split: about 0.5 and 0.6
    assert p > 0.4 and r > 0.4
    # noise: its features all land in one spot (inside the real manifold, so precision alone is fooled), which
    # covers none of the real emoji: recall is what catches it
    _, r_noise = emoji_precision_recall(torch.rand(180, 3, 32, 32) * 2 - 1, real[180:])
    assert r_noise < 0.1
    idx, db = nearest_training_images(pool[[5, 40]], pool)  # copies of training images are found, at high PSNR
    assert idx.tolist() == [5, 40] and (db > 60).all()
    _, db_new = nearest_training_images(real[:20], pool)  # new emoji are not copies
    assert db_new.median() < 30
