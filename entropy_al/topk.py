"""``entropy_al.topk.StreamingTopK``: the public import path of :class:`entropy_al.selection.StreamingTopK`."""

from .selection.topk import StreamingTopK

__all__ = ["StreamingTopK"]
