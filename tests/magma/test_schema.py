import numpy as np
import pytest

from magma.episode import Episode, EpisodeMeta, iter_episode_dirs
from magma.schema import Sample, SampleError, Turn, sample_from_tar_members, sample_to_tar_members


def _sample(n_images=1):
    rng = np.random.default_rng(0)
    return Sample(id="som-page1-0", images=[rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
                                            for _ in range(n_images)],
                  conversation=[Turn("user", "<image>" * n_images + "Which mark is OK?"),
                                Turn("assistant", "Mark 3", "spatial")],
                  source="som/html", dataset="", meta={"page": "p1"})


def test_tar_members_round_trip():
    s = _sample(2)
    members = sample_to_tar_members(s)
    assert set(members) == {"som-page1-0.json", "som-page1-0.0.png", "som-page1-0.1.png"}
    back = sample_from_tar_members(s.id, {k[len(s.id) + 1:]: v for k, v in members.items()})
    assert back.conversation == s.conversation and back.meta == s.meta
    assert all(np.array_equal(a, b) for a, b in zip(back.images, s.images))


def test_schema_errors_name_the_sample():
    with pytest.raises(SampleError, match="kind"):
        Turn("assistant", "x")
    s = _sample()
    s.images = []
    with pytest.raises(SampleError, match="som-page1-0.*placeholders"):
        s.validate()
    with pytest.raises(SampleError, match="cannot decode"):
        sample_from_tar_members("k", {"json": b"{not json"})


def test_episode_round_trip(tmp_path):
    meta = EpisodeMeta(episode_id="ep1", env="metaworld", task="reach-v3", instruction="reach",
                       action_space="robot", seed=3)
    ep = Episode(meta, np.zeros((5, 8, 8, 3), np.uint8), actions=np.ones((5, 4), np.float32),
                 proprio=np.zeros((5, 3), np.float32))
    ep.save(tmp_path)
    (tmp_path / ".ep2.tmp1").mkdir()  # a half-written episode is ignored
    dirs = list(iter_episode_dirs(tmp_path))
    assert [d.name for d in dirs] == ["ep1"]
    back = Episode.load(dirs[0])
    assert back.meta.num_steps == 5 and np.array_equal(back.actions, ep.actions)
    with pytest.raises(ValueError, match="does not match"):
        Episode(meta, np.zeros((5, 8, 8, 3), np.uint8), actions=np.ones((4, 4))).validate()
