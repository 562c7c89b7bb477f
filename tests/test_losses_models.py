"""Losses honour ignore_index; any smp architecture builds; local weight files load safely."""

from __future__ import annotations

import pytest
import torch

from masklab.errors import UserError
from masklab.losses import build_loss
from masklab.models import build_model


@pytest.mark.parametrize("terms", [{"ce": 1.0}, {"dice": 1.0}, {"focal": 1.0}, {"ce": 1.0, "dice": 0.5}])
def test_ignored_pixels_do_not_change_loss_or_gradient(terms):
    torch.manual_seed(0)
    loss_fn = build_loss(terms, ignore_index=255)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :3] = 255
    changed = logits.clone()
    changed[:, :, :3] = torch.randn(2, 3, 3, 8) * 10  # only ignored pixels differ
    a, b = logits.requires_grad_(), changed.requires_grad_()
    la, lb = loss_fn(a, target), loss_fn(b, target)
    assert torch.allclose(la, lb, atol=1e-6)
    la.backward()
    lb.backward()
    assert torch.allclose(a.grad[:, :, 3:], b.grad[:, :, 3:], atol=1e-6)
    assert a.grad[:, :, :3].abs().max() == 0


def test_weighted_sum_adds_terms():
    logits, target = torch.randn(1, 2, 4, 4), torch.randint(0, 2, (1, 4, 4))
    ce, dice = build_loss({"ce": 1.0}, 255), build_loss({"dice": 1.0}, 255)
    both = build_loss({"ce": 2.0, "dice": 0.5}, 255)
    assert torch.allclose(both(logits, target), 2 * ce(logits, target) + 0.5 * dice(logits, target))


def test_unknown_loss_term_is_clear_error():
    with pytest.raises(UserError, match=r"loss terms \['bce'\]: unknown \['bce'\]; expected a non-empty subset of"):
        build_loss({"bce": 1.0}, 255)


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus", "Segformer", "UnetPlusPlus", "Linknet"])
def test_architectures_build_and_normalise_inside(arch):
    model = build_model(num_classes=3, arch=arch, encoder="resnet18").eval()
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 3, 64, 64)
    assert {"mean", "std"} <= dict(model.named_buffers()).keys()


def test_logits_at_another_size_than_the_input_are_a_clear_error():
    """smp's FPN after 3 encoder stages upsamples 4x too far: named at the model's first forward, not in the loss."""
    image = torch.zeros(1, 3, 32, 32)
    with pytest.raises(UserError, match=r"logits of 128x128 px for an input of 32x32 px.*model.upsampling=1"):
        build_model(num_classes=2, arch="FPN", encoder="resnet18", encoder_depth=3)(image)
    fixed = build_model(num_classes=2, arch="FPN", encoder="resnet18", encoder_depth=3, upsampling=1)
    assert fixed(image).shape == (1, 2, 32, 32)


def test_unknown_encoder_is_clear_error():
    with pytest.raises(UserError, match="model arch='Unet' encoder='resnet999': "):
        build_model(num_classes=2, encoder="resnet999")


def test_local_weights_file_full_and_encoder_only(tmp_path):
    src = build_model(num_classes=2, arch="Unet", encoder="resnet18")
    torch.save(src.state_dict(), tmp_path / "full.pt")
    torch.save(src.net.encoder.state_dict(), tmp_path / "encoder.pt")
    full = build_model(num_classes=2, weights_path=str(tmp_path / "full.pt"))
    enc = build_model(num_classes=2, weights_path=str(tmp_path / "encoder.pt"))
    for k, v in src.net.state_dict().items():
        assert torch.equal(full.net.state_dict()[k], v)
    for k, v in src.net.encoder.state_dict().items():
        assert torch.equal(enc.net.encoder.state_dict()[k], v)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"bad.pt: none of its 1 tensors match the model's parameter names$"):
        build_model(num_classes=2, weights_path=str(tmp_path / "bad.pt"))


def test_a_weights_file_for_another_model_is_refused_and_a_new_head_is_not(tmp_path, caplog):
    """A file that fits only part of the model (a resnet34 encoder into a resnet18 one: every resnet18 name is in
    it, half the file is not used; a UNet file into an FPN: the decoder stays random) is refused, naming what
    loaded; model.weights_strict=false loads the matching tensors with a warning. A new head for another number
    of classes (2 tensors) loads, and the log says which tensors kept their initial values."""
    from masklab.models import build_model_from_spec

    torch.save(build_model(num_classes=2, encoder="resnet34").net.encoder.state_dict(), tmp_path / "r34.pt")
    with pytest.raises(UserError, match=r"r34.pt: loaded 100 of the encoder's 100 tensors; 80 of the file's 180 "
                                        r"unused .*model.weights_strict=false"):
        build_model(num_classes=2, encoder="resnet18", weights_path=str(tmp_path / "r34.pt"))
    unet = build_model(num_classes=2)
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    with pytest.raises(UserError, match=r"unet.pt: loaded \d+ of the model's \d+ tensors; \d+ left as initialised "
                                        r"\(net.decoder"):
        build_model(num_classes=2, arch="FPN", weights_path=str(tmp_path / "unet.pt"))
    with caplog.at_level("INFO", logger="masklab"):
        loose = build_model_from_spec({"arch": "FPN", "weights_path": str(tmp_path / "unet.pt"),
                                       "weights_strict": False}, 2)
    assert torch.equal(loose.net.encoder.conv1.weight, unet.net.encoder.conv1.weight)
    assert any(r.levelname == "WARNING" and "left as initialised" in r.message for r in caplog.records)

    caplog.clear()
    with caplog.at_level("INFO", logger="masklab"):
        three = build_model(num_classes=3, weights_path=str(tmp_path / "unet.pt"))  # another number of classes
    assert torch.equal(three.net.decoder.blocks[0].conv1[0].weight, unet.net.decoder.blocks[0].conv1[0].weight)
    (line,) = [r.message for r in caplog.records if "weights file" in r.message]
    assert "2 left as initialised (net.segmentation_head.0.weight, net.segmentation_head.0.bias)" in line, line
    assert "2 of the file's" in line and "2 of another shape" in line, line


def test_a_torchvision_imagenet_state_dict_loads_into_the_encoder(tmp_path):
    """What the README tells a user with downloaded weights to save: torchvision's resnet18 state_dict fills the
    smp resnet18 encoder (its classifier, fc, is the only thing left over)."""
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = build_model(num_classes=2, weights_path=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.net.encoder.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
