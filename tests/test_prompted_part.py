"""The prompted part of a mask: what evaluation scores with TEST.PROMPTED_PART, the rule
``geosam segment`` applies to polygons."""

import numpy as np
import shapely
import torch

from geosam.engine.prompted_part import keep_prompted_parts, prompted_components


def two_fields() -> np.ndarray:
    """A 40 × 40 mask: a 10 × 10 field at the top left, a 16 × 16 field at the bottom right,
    and one speckle pixel touching neither (4-connected apart)."""
    mask = np.zeros((40, 40), bool)
    mask[2:12, 2:12] = True
    mask[20:36, 20:36] = True
    mask[15, 15] = True
    return mask


def test_click_keeps_the_region_under_it_even_if_smaller():
    kept = prompted_components(two_fields(), points=np.array([[5.5, 6.2]]))
    assert kept.sum() == 100 and kept[2:12, 2:12].all()


def test_clicks_on_two_regions_keep_both():
    kept = prompted_components(two_fields(), points=np.array([[5.0, 5.0], [30.0, 30.0]]))
    assert kept.sum() == 100 + 256


def test_click_on_background_falls_back_to_the_largest_region():
    kept = prompted_components(two_fields(), points=np.array([[38.0, 2.0]]))
    assert kept.sum() == 256 and kept[20:36, 20:36].all()


def test_box_keeps_the_region_most_inside_it():
    # The box holds all of the small field but only 4 × 4 pixels of the large one.
    kept = prompted_components(two_fields(), box=np.array([0.0, 0.0, 24.0, 24.0]))
    assert kept.sum() == 100 and kept[2:12, 2:12].all()


def test_diagonal_neighbours_are_separate_regions_as_in_polygonization():
    mask = np.zeros((6, 6), bool)
    mask[1, 1] = mask[2, 2] = True
    mask[4:6, 4:6] = True
    assert prompted_components(mask, points=np.array([[1.5, 1.5]])).sum() == 1


def test_one_region_or_none_is_returned_as_is():
    single = np.zeros((8, 8), bool)
    single[2:5, 2:5] = True
    assert prompted_components(single, points=np.array([[7.0, 7.0]])) is single
    empty = np.zeros((8, 8), bool)
    assert not prompted_components(empty, box=np.array([0.0, 0.0, 8.0, 8.0])).any()


def test_batch_uses_each_prompts_own_positive_points_and_boxes():
    masks = torch.from_numpy(np.stack([two_fields(), two_fields()]))
    # Prompt 0's positive click is on the large field; its negative one on the small field.
    points = {
        "coords": torch.tensor([[[30.0, 30.0], [5.0, 5.0]], [[5.0, 5.0], [0.0, 0.0]]]),
        "labels": torch.tensor([[1.0, 0.0], [1.0, -1.0]]),
    }
    kept = keep_prompted_parts(masks, points)
    assert kept.dtype == torch.bool
    assert kept.sum((1, 2)).tolist() == [256, 100]
    boxes = {"boxes": torch.tensor([[0.0, 0.0, 14.0, 14.0], [18.0, 18.0, 38.0, 38.0]])}
    assert keep_prompted_parts(masks, boxes).sum((1, 2)).tolist() == [100, 256]


def test_same_rule_as_the_polygons_geosam_segment_delivers():
    from geosam.segment.polygons import mask_to_polygon, prompted_parts

    mask = two_fields()
    identity = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # GDAL order: map x = column, map y = row
    polygon = mask_to_polygon(mask, identity)
    for points, box in (
        (np.array([[5.5, 6.5]]), None),
        (np.array([[38.5, 2.5]]), None),
        (None, np.array([0.0, 0.0, 24.0, 24.0])),
    ):
        pixels = prompted_components(mask, points=points, box=box)
        box_geometry = None if box is None else shapely.box(*box)
        assert prompted_parts(polygon, points, box_geometry).area == pixels.sum()


def test_evaluation_scores_the_prompted_part_unless_told_not_to():
    from geosam.config import load_config
    from geosam.engine.inference import predict_batch
    from geosam.modeling.build import build_model

    cfg = load_config(None, ["MODEL.TYPE", "tiny", "INPUT.IMAGE_SIZE", "64", "MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    torch.manual_seed(0)
    embeddings = torch.randn(1, *model.prompt_encoder.get_dense_pe().shape[1:])
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0], [10.0, 30.0, 60.0, 60.0]])
    batch = {
        "embeddings": embeddings,
        "input_sizes": torch.tensor([[64, 64]]),
        "tile_ids": ["t"],
        "variants": [0],
        "prompts": [
            {
                "box": {
                    "boxes": boxes,
                    "targets": torch.zeros(2, 64, 64, dtype=torch.bool),
                    "instance_ids": torch.tensor([1, 2]),
                }
            }
        ],
    }
    device = torch.device("cpu")
    cfg.defrost()
    cfg.TEST.PROMPTED_PART = False
    raw = predict_batch(cfg, model, batch, device)[0].masks
    cfg.TEST.PROMPTED_PART = True
    delivered = predict_batch(cfg, model, batch, device)[0].masks
    expected = keep_prompted_parts(raw, batch["prompts"][0]["box"])
    assert torch.equal(delivered, expected)
    assert not torch.equal(delivered, raw)  # the untrained model's masks are fragmented
