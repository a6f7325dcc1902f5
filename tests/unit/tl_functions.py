"""TransformerLens's own patching function for each of patchlab's components: the independent
computation that the reference loop (tests/unit/test_patching.py) and fast patching
(tests/unit/test_fast_patching.py) are checked against."""

from __future__ import annotations

import transformer_lens.patching as tl_patching

from patchlab.patching import COMPONENTS

TL_FUNCTIONS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "head_out": tl_patching.get_act_patch_attn_head_out_all_pos,
    "head_out_by_pos": tl_patching.get_act_patch_attn_head_out_by_pos,
    "head_q": tl_patching.get_act_patch_attn_head_q_all_pos,
    "head_q_by_pos": tl_patching.get_act_patch_attn_head_q_by_pos,
    "head_k": tl_patching.get_act_patch_attn_head_k_all_pos,
    "head_k_by_pos": tl_patching.get_act_patch_attn_head_k_by_pos,
    "head_v": tl_patching.get_act_patch_attn_head_v_all_pos,
    "head_v_by_pos": tl_patching.get_act_patch_attn_head_v_by_pos,
    "head_pattern": tl_patching.get_act_patch_attn_head_pattern_all_pos,
    "head_pattern_by_pos": tl_patching.get_act_patch_attn_head_pattern_by_pos,
}
assert set(TL_FUNCTIONS) == set(COMPONENTS)
