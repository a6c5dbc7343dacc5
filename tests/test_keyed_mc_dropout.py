"""keyed_mc_dropout on whole models: coverage of module and functional dropout, layouts, sites, and restoring the
modules."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from keyed_fixtures import SEED, ids_for
from torch import nn

import entropy_al
from entropy_al import keyed_mc

# ---- keyed_mc_dropout on models ----------------------------------------------------------------------------------


class FunctionalNet(nn.Module):
    """F.dropout in forward with the module's own training flag (DISTIL's EfficientNet pattern)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(10, 32), nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.5, training=self.training))


def zoo():
    """Models covering every keyed module kind and functional dropout; all samples first."""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(10, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 32),
        nn.Dropout(0.2),
        nn.AlphaDropout(0.1),
        nn.Linear(32, 4),
    )
    conv = nn.Sequential(
        nn.Unflatten(1, (1, 10)),
        nn.Conv1d(1, 6, 3),
        nn.Dropout1d(0.3),
        nn.Unflatten(2, (2, 4)),
        nn.Dropout2d(0.3),
        nn.Unflatten(3, (2, 2)),
        nn.Dropout3d(0.3),
        nn.FeatureAlphaDropout(0.2),
        nn.Flatten(),
        nn.Linear(48, 4),
    )
    return {"mlp": mlp, "conv": conv, "functional": FunctionalNet()}


def mc_logits(model, x, first_ids, n_drop, seed=SEED, batch=None, stacked=False):
    """Keyed MC logits [n_drop, N, C] of the samples of x (pool indices first_ids + i), in batches."""
    n = x.shape[0]
    batch = batch or n
    blocks = []
    with keyed_mc.keyed_mc_dropout(model, seed) as keyed:
        for start in range(0, n, batch):
            xb = x[start : start + batch]
            ids = torch.arange(start, start + xb.shape[0], device=x.device) + first_ids
            if stacked:
                passes = torch.arange(n_drop, device=x.device).repeat_interleave(xb.shape[0])
                with keyed.batch(ids.repeat(n_drop), passes):
                    out = model(xb.repeat(n_drop, 1))
                    blocks.append(out.reshape(n_drop, xb.shape[0], *out.shape[1:]))
            else:
                outs = []
                for k in range(n_drop):
                    with keyed.batch(ids, k):
                        outs.append(model(xb))
                blocks.append(torch.stack(outs))
    return torch.cat(blocks, dim=1)


def assert_same_masks(a, b):
    """Logits of the same masks: equal up to the last bits that matmul kernels change with the batch size; a
    different mask moves them by O(0.1)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mlp", "conv", "functional"])
def test_model_logits_invariant_to_batching_and_stacking(device, name):
    model = zoo()[name].to(device).train()
    x = torch.randn(23, 10, device=device)
    with torch.no_grad():
        reference_logits = mc_logits(model, x, 100, 4)
        assert (reference_logits[0] - reference_logits[1]).abs().max() > 0.01  # passes differ
        for batch in (1, 5, 8):
            assert_same_masks(mc_logits(model, x, 100, 4, batch=batch), reference_logits)
        assert_same_masks(mc_logits(model, x, 100, 4, batch=7, stacked=True), reference_logits)
        # A sample's logits follow its id, not its row, the others in its batch or torch's global generator.
        order = torch.randperm(23)
        torch.manual_seed(123)
        with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
            for k in range(2):
                with keyed.batch(100 + order.to(device), k):
                    assert_same_masks(model(x[order]), reference_logits[k, order])
        other_seed = mc_logits(model, x, 100, 4, seed=SEED + 1)
        assert (other_seed - reference_logits).abs().max() > 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_masks_bit_identical_through_a_model(device):
    """Without matmuls in between, the outputs are bit-identical across batch sizes, orders and stacking."""
    model = nn.Sequential(nn.Dropout(0.3), nn.Unflatten(1, (4, 6)), nn.Dropout1d(0.5), nn.AlphaDropout(0.2))
    x = torch.randn(30, 24, device=device)
    with torch.no_grad():
        full = mc_logits(model, x, 7, 3)
        assert torch.equal(mc_logits(model, x, 7, 3, batch=4), full)
        assert torch.equal(mc_logits(model, x, 7, 3, batch=11, stacked=True), full)


@pytest.mark.parametrize("device", DEVICES)
def test_sites_are_independent(device):
    """Two dropout layers on the same shape, and one module called twice, draw different masks."""
    shared = nn.Dropout(0.5)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = shared

        def forward(self, x):
            return torch.stack([self.drop(x), self.drop(x), F.dropout(x, 0.5)])

    x = torch.ones(64, 50, device=device)
    with keyed_mc.keyed_mc_dropout(Twice(), SEED) as keyed, keyed.batch(*ids_for(64, device)):
        a, b, c = Twice()(x)
    assert not torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(b, c)
    assert torch.equal(a, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 0), *ids_for(64, device)))
    assert torch.equal(c, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 2), *ids_for(64, device)))
    with keyed_mc.keyed_mc_dropout(Twice(), SEED) as keyed, keyed.batch(*ids_for(64, device), first_site=7):
        d = Twice()(x)[0]
    assert torch.equal(d, entropy_al.keyed_dropout(x, 0.5, keyed_mc.site_seed(SEED, 7), *ids_for(64, device)))


def test_functional_dropout_follows_the_training_flag_and_the_option():
    """F.dropout(training=self.training) in an eval-mode module stays off, exactly as without keying; with
    functional=False it is left to torch's generator (so it changes with torch's seed)."""
    model = FunctionalNet().eval()
    x = torch.randn(6, 10)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(6)):
        assert torch.equal(model(x), model.fc2(torch.relu(model.fc1(x))))
    model.train()
    outputs = []
    for torch_seed in (1, 2):
        torch.manual_seed(torch_seed)
        with keyed_mc.keyed_mc_dropout(model, SEED, functional=False) as keyed, keyed.batch(*ids_for(6)):
            outputs.append(model(x))
    assert not torch.equal(outputs[0], outputs[1])


def test_inplace_and_eval_modules():
    model = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Dropout(0.5))
    model[1].eval()
    x = torch.ones(8, 40)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(8)):
        out = model(x)
    assert out is x  # in place, and the eval-mode module is the identity
    assert torch.equal(x, entropy_al.keyed_dropout(torch.ones(8, 40), 0.5, keyed_mc.site_seed(SEED, 0), *ids_for(8)))


class SequenceFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))

    def forward(self, x):  # x [B, T, 4] -> [T, B, 4] inside
        return self.encoder(x.transpose(0, 1)).transpose(0, 1)


def test_unkeyable_layouts_raise_naming_the_module():
    with keyed_mc.keyed_mc_dropout(SequenceFirst(), SEED) as keyed:
        pass
    model = SequenceFirst().train()
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed, keyed.batch(*ids_for(3)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"module 'encoder.1' \(Dropout\) got an input of shape \[5, 3, 4\] "
            r"whose dim 0 is not the 3 rows of the batch",
        ):
            model(torch.randn(3, 5, 4))
    drop1d = nn.Dropout1d(0.5)
    with keyed_mc.keyed_mc_dropout(drop1d, SEED) as keyed, keyed.batch(*ids_for(4)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"module '' \(Dropout1d\) got an input of shape \[4, 9\]: keyed "
            r"channel dropout needs a batched \[N, C, ...\] input",
        ):
            drop1d(torch.randn(4, 9))


def test_dropout_inside_torch_functions_is_refused():
    """The mode sees top-level calls only: dropout that runs inside a torch function is refused, not left
    to torch's generator."""
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).train()
    x = torch.randn(3, 5, 8)
    with keyed_mc.keyed_mc_dropout(layer, SEED) as keyed, keyed.batch(*ids_for(3)):
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError,
            match=r"attention dropout \(torch.nn.functional.multi_head_attention_forward, "
            r"dropout_p = 0.1\) cannot be keyed",
        ):
            layer(x)
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError, match="scaled_dot_product_attention with dropout_p = 0.2 cannot be keyed"
        ):
            F.scaled_dot_product_attention(x, x, x, None, 0.2)
        lstm = nn.LSTM(8, 4, num_layers=2, dropout=0.3, batch_first=True)
        with pytest.raises(
            keyed_mc.UnkeyableDropoutError, match=r"the dropout between the layers of torch.lstm \(dropout = 0.3\)"
        ):
            lstm(x)
        lstm.eval()
        lstm(x)  # no dropout in eval mode: allowed
    # Attention dropout off: the layer's three dropout modules are keyed and the forward runs.
    layer.self_attn.dropout = 0.0
    with keyed_mc.keyed_mc_dropout(layer, SEED) as keyed:
        assert keyed.modules == ["dropout", "dropout1", "dropout2"]
        with keyed.batch(*ids_for(3)):
            layer(x)


def test_forward_outside_a_batch_block_raises():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    with keyed_mc.keyed_mc_dropout(model, SEED):
        with pytest.raises(RuntimeError, match=r"module '1' \(Dropout\) ran outside `keyed.batch"):
            model(torch.randn(2, 3))


def forwards_of(model):
    return {name: dict(module.__dict__).get("forward") for name, module in model.named_modules()}


def test_modules_restored_exactly_also_after_exceptions():
    model = zoo()["mlp"].train()
    custom = nn.Dropout(0.5)
    custom.forward = lambda x: x * 3  # an instance forward someone else set: left alone, kept afterwards
    model.append(custom)
    before = forwards_of(model)
    with pytest.raises(ZeroDivisionError):
        with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
            assert keyed.modules == ["2", "4", "5"]
            assert all(getattr(model[i].forward, "_entropy_al_keyed", False) for i in (2, 4, 5))
            with keyed.batch(*ids_for(2)):
                model(torch.randn(2, 10))
                raise ZeroDivisionError
    assert forwards_of(model) == before
    assert all("forward" not in model[i].__dict__ for i in (2, 4, 5)) and model[7].__dict__["forward"] is custom.forward
    assert type(model[2]).forward is nn.Dropout.forward
    # Stock behaviour is back: torch's generator again.
    torch.manual_seed(0)
    a = model[2](torch.ones(4, 100))
    torch.manual_seed(0)
    assert torch.equal(a, F.dropout(torch.ones(4, 100), 0.5, training=True))
    # The mode is gone too: functional dropout no longer needs ids.
    F.dropout(torch.ones(3), 0.5)


def test_nested_activation_is_refused_and_ids_are_checked():
    model = nn.Sequential(nn.Dropout(0.5))
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
        with pytest.raises(RuntimeError, match="already active on module '0'"):
            with keyed_mc.keyed_mc_dropout(model, SEED):
                pass
        assert getattr(model[0].forward, "_entropy_al_keyed", False)  # the outer activation is intact
        with pytest.raises(TypeError, match="expected `sample_ids` to be a 1-D int64 tensor, got torch.int32"):
            with keyed.batch(torch.arange(3, dtype=torch.int32), 0):
                pass
        with pytest.raises(ValueError, match=r"expected `pass_ids` of shape \[3\]"):
            with keyed.batch(torch.arange(3), torch.arange(4)):
                pass
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("device", DEVICES)
def test_ids_on_another_device_are_moved(device):
    model = nn.Sequential(nn.Linear(5, 5), nn.Dropout(0.5)).to(device)
    x = torch.randn(4, 5, device=device)
    with keyed_mc.keyed_mc_dropout(model, SEED) as keyed:
        with keyed.batch(torch.arange(4), 2):
            cpu_ids = model(x)
        with keyed.batch(torch.arange(4, device=device), torch.full((4,), 2, device=device)):
            device_ids = model(x)
    assert torch.equal(cpu_ids, device_ids)
