"""patchlab.hooks.act_name spells every hook the library names as TransformerLens does, and refuses
what is not a hook with one line that says how to call it."""

from __future__ import annotations

import pytest
from transformer_lens.utilities import get_act_name

from patchlab.hooks import act_name
from patchlab.patching import COMPONENTS, component, hook_name

IN_BLOCKS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "z", "pattern",
             "attn_scores", "pre", "post")


@pytest.mark.parametrize("activation", IN_BLOCKS)
def test_block_hooks_are_transformer_lens_names(activation: str) -> None:
    assert act_name(activation, 7) == get_act_name(activation, 7)


def test_hooks_outside_the_blocks() -> None:
    assert [act_name(a) for a in ("embed", "pos_embed", "scale")] == [
        get_act_name("embed"), get_act_name("pos_embed"), "ln_final.hook_scale"]


def test_every_component_hooks_a_name_the_course_model_has(model) -> None:
    names = set(model.hook_dict)
    for name in COMPONENTS:
        assert hook_name(name, model.cfg.n_layers - 1) in names, name
        assert component(name).hook(0) == hook_name(name, 0)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: act_name("z"), "give its layer"),
    (lambda: act_name("embed", 0), "without a layer"),
    (lambda: act_name("hook_z", 0), "unknown activation 'hook_z'"),
])
def test_bad_names_get_one_clear_line(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
