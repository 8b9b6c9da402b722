"""Job start-up without scikit-learn: same d3rlpy, same numbers, PRDC still usable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRAIN = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    if sys.argv[1] == "light":
        from replication.imports import import_d3rlpy
        d3rlpy = import_d3rlpy()
    else:
        import d3rlpy
    loaded = "sklearn" in sys.modules
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(200, 3)).astype(np.float32)
    dataset = d3rlpy.dataset.MDPDataset(
        obs, rng.uniform(-1, 1, size=(200, 2)).astype(np.float32), rng.normal(size=200).astype(np.float32),
        np.eye(1, 200, 199, dtype=np.float32)[0], action_space=d3rlpy.constants.ActionSpace.CONTINUOUS,
    )
    algo = d3rlpy.algos.IQLConfig(batch_size=32).create(device="cpu")
    d3rlpy.seed(0)
    algo.fit(dataset, n_steps=20, n_steps_per_epoch=20, show_progress=False, save_interval=10**6,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    action = algo.predict(obs[:5]).tolist()
    print(json.dumps({"sklearn_loaded": loaded, "action": action}))
    """
)


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_d3rlpy_without_sklearn_trains_identically():
    light, plain = run(TRAIN, "light"), run(TRAIN, "plain")
    assert light["sklearn_loaded"] is False
    assert plain["sklearn_loaded"] is True
    assert light["action"] == plain["action"]  # bit-for-bit the same policy


def test_prdc_and_a_later_sklearn_import_get_the_real_package():
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from replication.imports import import_d3rlpy
        d3rlpy = import_d3rlpy()
        stubbed = "sklearn" in sys.modules
        nn = d3rlpy.algos.PRDC._nbsr
        nn.fit(np.arange(6.0).reshape(3, 2))
        distance, index = nn.kneighbors(np.array([[2.0, 3.0]]))
        import sklearn.neighbors
        print(json.dumps({"stubbed": stubbed, "index": int(index[0, 0]),
                          "real": hasattr(sklearn.neighbors, "KDTree")}))
        """
    )
    result = run(code)
    assert result == {"stubbed": False, "index": 1, "real": True}


def test_job_start_up_prints_no_gym_banner_but_keeps_other_stderr():
    from replication.imports import gym_notice, without_notice

    notice = gym_notice()
    assert notice and "Gym has been unmaintained" in notice  # what the installed gym would print
    code = "from replication.imports import import_d3rlpy; import_d3rlpy(); import sys; print('gym' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # gym is imported (d3rlpy needs it) ...
    assert "Gym has been unmaintained" not in out.stderr  # ... without its banner
    plain = subprocess.run([sys.executable, "-c", "import d3rlpy"], capture_output=True, text=True, check=True)
    assert notice in plain.stderr  # a bare import still shows it: the filter is what removes it
    assert without_notice(f"before\n{notice}\nafter\n", notice) == "before\nafter\n"
    assert without_notice("a warning\n", notice) == "a warning\n"


def test_no_command_prints_gymnasium_robotics_notice_about_adroit():
    """The Kitchen environments import gymnasium_robotics, which prints a notice about the Adroit
    environments (unused here): dropped at import, other stderr kept; the commands print no such line."""
    from replication.imports import robotics_notice, without_notice

    notice = robotics_notice()
    assert notice and "Adroit" in notice  # what the installed gymnasium-robotics prints
    plain = subprocess.run([sys.executable, "-c", "import gymnasium_robotics"], capture_output=True, text=True)
    assert notice in plain.stderr  # a bare import still shows it: the filter is what removes it
    kitchen = "from replication.agents.envs import make_env; make_env('kitchen', 0); print('made')"
    made = subprocess.run([sys.executable, "-c", kitchen], capture_output=True, text=True, check=True)
    assert made.stdout.strip() == "made" and "Adroit" not in made.stderr, made.stderr
    for args in (["envs"], ["check-config", "--configfile", "config/ci.yaml"]):
        command = [sys.executable, "-m", "replication", *args]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
        assert "Adroit" not in out.stdout + out.stderr, args
    assert without_notice(f"a warning\n{notice}\n", notice) == "a warning\n"
