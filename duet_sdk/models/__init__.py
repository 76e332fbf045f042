"""DUET models: building blocks, event towers and the upstream networks (ClickAUN / ConvAUN)."""

from duet_sdk._extras import missing_extra

try:
    from duet_sdk.models.attention import MultiHeadAttention
    from duet_sdk.models.blocks import CrossAttentionBlock, SelfAttentionBlock
    from duet_sdk.models.config import AttentionConfig, HashConfig, TaskSpec, UpstreamConfig
    from duet_sdk.models.embeddings import MultiHashEmbedding, TimeEncoding
    from duet_sdk.models.layers import MLP, CrossNetV2, FeedForward, RMSNorm
    from duet_sdk.models.tower import EventTower
    from duet_sdk.models.upstream import ItemBranch, StaticTokens, UpstreamNet, UserEncoder, UserSummarizer
except ModuleNotFoundError as exc:  # the [train] extra is not installed
    raise missing_extra(exc, __name__) from exc

__all__ = [
    "AttentionConfig", "CrossAttentionBlock", "CrossNetV2", "EventTower", "FeedForward", "HashConfig",
    "ItemBranch", "MLP", "MultiHashEmbedding", "MultiHeadAttention", "RMSNorm", "SelfAttentionBlock",
    "StaticTokens", "TaskSpec", "TimeEncoding", "UpstreamConfig", "UpstreamNet", "UserEncoder", "UserSummarizer",
]
