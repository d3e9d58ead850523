"""CLIP through open_clip, shared by the CLIP projects (PTNL, Patch Ranking): model loading from a hub
tag or a local file (QuickGELU handled), CoOp's few-shot datasets and a generic image folder,
per-dataset templates, zero-shot classification, CLIP's transforms."""
from shared.clip.datasets import Datum, FewShotDataset, ImageListDataset, load_dataset, read_split  # noqa: F401
from shared.clip.models import ClipBundle, encode_text_embeddings, freeze, load_clip  # noqa: F401
from shared.clip.templates import TEMPLATES, template_for  # noqa: F401
from shared.clip.transforms import clip_test_transform, coop_train_transform  # noqa: F401
from shared.clip.zeroshot import encode_images, text_classifier, zero_shot_logits  # noqa: F401
