from geosam.data.datasets.tile_dataset import TileDataset

__all__ = ["TileDataset"]
