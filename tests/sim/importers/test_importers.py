"""`stalesim import`: real verl / OpenRLHF / AReaL files (tests/data/importers) mapped to
scenarios, the printout of defaults and unmapped keys, the error paths, and that the written
YAML simulates and plans."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.common.config_file import ConfigError
from stalesim.sim.importers import IMPORTERS, import_trainer_config
from stalesim.sim.importers import areal as areal_importer
from stalesim.sim.importers import openrlhf as openrlhf_importer
from stalesim.sim.importers.common import parse_script
from stalesim.sim.models import MODELS, preset_for
from stalesim.sim.presets import load_scenario

DATA = Path(__file__).resolve().parents[2] / "data" / "importers"
VERL = DATA / "verl"
ORLHF = DATA / "openrlhf"
AREAL = DATA / "areal"


def _run(*args: str):
    return CliRunner().invoke(main, list(args), env={"STALESIM_QUIET": "1"})


def _written(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "imported.yaml"
    result = _run("import", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    return yaml.safe_load(out.read_text())


# --- verl ---------------------------------------------------------------------------------


def test_verl_resolved_hydra_config(tmp_path: Path) -> None:
    s = _written(tmp_path, "verl", str(VERL / "grpo_run" / ".hydra" / "config.yaml"))
    assert s["name"] == "verl-grpo_run"
    assert s["model"]["preset"] == "qwen2.5-7b"
    assert s["workload"]["prompts_per_step"] == 512
    assert s["workload"]["group_size"] == 8
    assert s["workload"]["max_prompt_tokens"] == 1024
    assert s["workload"]["max_response_tokens"] == 8192
    assert s["algorithm"]["mode"] == "sync_colocated"
    # 4 nodes x 8 GPUs, engines of TP 2 on all of them
    assert s["cluster"]["learner_gpus"] == 32
    assert s["cluster"]["rollout_engines"] == 16
    assert s["cluster"]["rollout_tp"] == 2
    assert s["cluster"]["memory_reserve_fraction"] == pytest.approx(0.4)
    assert s["algorithm"]["minibatches_per_step"] == 512 // 128
    assert s["algorithm"]["reference_model"] is True  # use_kl_loss=True
    assert s["algorithm"]["old_logprob_pass"] is True
    assert s["target"] == {"baseline_lr": 1e-6, "baseline_steps": 400}


def test_verl_shipped_ppo_trainer_with_hydra_overrides() -> None:
    imported = import_trainer_config(
        "verl",
        VERL / "ppo_trainer.yaml",
        (
            "data.train_batch_size=512",
            "actor_rollout_ref.rollout.n=8",
            "trainer.n_gpus_per_node=8",
            "trainer.nnodes=4",
            "actor_rollout_ref.model.path=/models/Qwen2.5-Math-7B",
            "+actor_rollout_ref.model.override_config.max_position_embeddings=32768",
            "algorithm.adv_estimator=grpo",
        ),
    )
    s = imported.scenario
    assert s["workload"]["prompts_per_step"] == 512
    assert s["workload"]["group_size"] == 8
    assert s["cluster"]["learner_gpus"] == 32
    # verl's default rollout TP is 2: 16 engines
    assert s["cluster"]["rollout_engines"] == 16
    # keys the overrides left to verl's defaults are reported as defaults, with their values
    defaults = {key: value for key, value, _ in imported.defaults}
    assert defaults["data.max_prompt_length"] == 512
    assert defaults["actor_rollout_ref.rollout.tensor_model_parallel_size"] == 2
    assert defaults["hardware.gpu"] == "H100"
    assert "data.train_batch_size" not in defaults
    unmapped = {key for key, _, _ in imported.unmapped}
    assert "algorithm.adv_estimator" not in unmapped  # grpo: no critic
    assert "trainer.total_epochs" in unmapped  # no total_training_steps: steps unknown


def test_verl_fully_async_launch_script(tmp_path: Path) -> None:
    out = tmp_path / "fa.yaml"
    result = _run("import", "verl", str(VERL / "dapo_7b_math_fsdp2_64_64.sh"), "--out", str(out))
    assert result.exit_code == 0, result.output
    s = yaml.safe_load(out.read_text())
    # 32 prompts x require_batches 4 x trigger_parameter_sync_step 4 between syncs
    assert s["workload"]["prompts_per_step"] == 512
    assert s["workload"]["group_size"] == 16
    assert s["workload"]["max_prompt_tokens"] == 2048  # $((1024 * 2))
    assert s["workload"]["max_response_tokens"] == 28 * 1024
    assert s["algorithm"]["mode"] == "async"
    assert s["algorithm"]["minibatches_per_step"] == 16
    assert s["algorithm"]["publish_interval"] == 16
    assert s["algorithm"]["streaming"] is True
    assert s["algorithm"]["max_stale_fraction"] == 0.5
    assert s["algorithm"]["inflight_updates"] is True
    assert s["algorithm"]["old_logprob_pass"] is False  # use_rollout_log_probs=True
    assert s["algorithm"]["reference_model"] is False
    # 8 rollout nodes x 8 GPUs at TP 4; 8 trainer nodes x 8 GPUs
    assert s["cluster"]["rollout_engines"] == 16
    assert s["algorithm"]["max_concurrent_rollouts"] == 16 * 16  # 16 prompts per server
    assert s["cluster"]["rollout_tp"] == 4
    assert s["cluster"]["learner_gpus"] == 64
    assert "target" not in s  # an async run's learning rate is not the on-policy baseline
    assert "learning rate 1e-06 is not the on-policy baseline" in result.output
    assert "data.train_batch_size = 0: not used by the fully-async trainer" in result.output
    # the same words are comments of the written file
    assert "# no counterpart in the scenario" in out.read_text()


def test_verl_one_step_off_recipe() -> None:
    s = import_trainer_config("verl", VERL / "one_step_off_run" / ".hydra" / "config.yaml").scenario
    assert s["algorithm"]["mode"] == "one_step"
    assert s["model"]["preset"] == "qwen2.5-7b"
    assert s["cluster"]["rollout_engines"] == 4
    assert s["cluster"]["learner_gpus"] == 12
    assert s["workload"]["prompts_per_step"] == 64
    assert s["algorithm"]["minibatches_per_step"] == 2
    assert s["algorithm"]["dynamic_sampling"] is True
    # filter_groups: verl regenerates whole batches; max_num_gen_batches 0 means no limit
    assert s["algorithm"]["dynamic_sampling_policy"] == "regenerate"
    assert "dynamic_sampling_max_rounds" not in s["algorithm"]
    assert "target" not in s


def test_verl_dapo_generation_batches() -> None:
    s = import_trainer_config(
        "verl",
        VERL / "one_step_off_run" / ".hydra" / "config.yaml",
        ("data.gen_batch_size=192", "algorithm.filter_groups.max_num_gen_batches=10"),
    ).scenario
    assert s["algorithm"]["dynamic_sampling_policy"] == "regenerate"
    assert s["algorithm"]["dynamic_sampling_chunk"] == 192
    assert s["algorithm"]["dynamic_sampling_max_rounds"] == 10


def test_verl_fully_async_recipe_yaml_defaults() -> None:
    s = import_trainer_config(
        "verl",
        VERL / "fully_async_ppo_trainer.yaml",
        ("actor_rollout_ref.model.path=Qwen/Qwen3-8B",),
    ).scenario
    # the recipe's own defaults: staleness_threshold 0.1, trigger 4, require_batches 1,
    # verl's ppo_mini_batch_size 256
    assert s["algorithm"]["max_stale_fraction"] == pytest.approx(0.1)
    assert s["algorithm"]["publish_interval"] == 4
    assert s["workload"]["prompts_per_step"] == 256 * 4
    assert s["cluster"]["learner_gpus"] == 8
    assert s["cluster"]["rollout_engines"] == 8 // 2


def test_verl_default_runs_without_arguments(tmp_path: Path) -> None:
    s = _written(tmp_path)
    assert s["model"]["preset"] == "deepseek-llm-7b"  # verl's default model
    assert s["workload"]["prompts_per_step"] == 1024
    assert s["cluster"]["rollout_engines"] == 4
    result = _run("import", "verl")
    assert "no CONFIG given: imported verl's own default config" in result.output
    assert "algorithm.adv_estimator = gae: PPO with a critic" in result.output


# --- OpenRLHF -------------------------------------------------------------------------------


def test_openrlhf_legacy_launch_script_with_arrays() -> None:
    imported = import_trainer_config(
        "openrlhf", ORLHF / "train_reinforce_baseline_ray_agent_async.sh"
    )
    s = imported.scenario
    assert s["model"]["preset"] == "qwen3-4b"
    assert s["workload"]["prompts_per_step"] == 128
    assert s["workload"]["group_size"] == 8
    assert s["workload"]["max_prompt_tokens"] == 10240
    assert s["workload"]["max_response_tokens"] == 64000
    assert s["algorithm"]["minibatches_per_step"] == 128 * 8 // 1024
    assert s["cluster"]["rollout_engines"] == 2
    assert s["cluster"]["rollout_tp"] == 2
    assert s["cluster"]["learner_gpus"] == 4
    assert s["algorithm"]["mode"] == "one_step"  # --async_train, a one-batch queue
    assert s["algorithm"]["reference_model"] is True  # --init_kl_coef 1e-5
    assert s["algorithm"]["dynamic_sampling"] is True
    assert s["cluster"]["memory_reserve_fraction"] == pytest.approx(0.3)
    assert "train.colocate_all" in {key for key, _, _ in imported.unmapped}


def test_openrlhf_saved_args(tmp_path: Path) -> None:
    s = _written(tmp_path, "openrlhf", str(ORLHF / "saved_args_async.json"))
    assert s["model"]["preset"] == "qwen2.5-7b"  # DeepSeek-R1-Distill-Qwen-7B
    assert s["workload"]["prompts_per_step"] == 256
    assert s["workload"]["group_size"] == 16
    assert s["workload"]["max_response_tokens"] == 16384
    assert s["workload"]["max_prompt_tokens"] == 18432 - 16384
    assert s["algorithm"]["minibatches_per_step"] == 256 * 16 // 1024
    assert s["algorithm"]["mode"] == "async"
    # a queue of 2 batches of 4 optimizer steps: the last mini-batch is (2 + 1) x 4 - 1 behind
    assert s["algorithm"]["max_staleness"] == 11
    assert s["algorithm"]["inflight_updates"] is True
    assert s["algorithm"]["kv_cache_on_update"] == "keep"
    assert s["algorithm"]["reference_model"] is False  # --algo.kl.init_coef 0
    assert s["cluster"]["learner_gpus"] == 16
    assert s["cluster"]["rollout_engines"] == 8


def test_openrlhf_extra_flags_override_the_script() -> None:
    s = import_trainer_config(
        "openrlhf",
        ORLHF / "saved_args_async.json",
        ("--rollout.batch_size", "128", "--train.async_queue_size=1"),
    ).scenario
    assert s["workload"]["prompts_per_step"] == 128
    # partial rollouts keep it async; one batch ahead of 2 optimizer steps: 2 x 2 - 1
    assert s["algorithm"]["max_staleness"] == 3


def test_openrlhf_defaults_are_the_real_argparse_defaults() -> None:
    tree = ast.parse((ORLHF / "train_ppo_ray.py.txt").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            if not node.args:
                continue
            flag = node.args[0]
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(flag, ast.Constant):
                name = str(flag.value)
            else:  # f"--{prefix}.adam.lr"
                name = ast.unparse(flag).removeprefix("f")[1:-1].replace("{prefix}", "actor")
            if "default" in keywords:
                value = keywords["default"]
                if isinstance(value, ast.IfExp):  # 1e-6 if prefix == "actor" else 9e-6
                    value = value.body
                found[name.removeprefix("--")] = value
            elif keywords.get("action") and ast.literal_eval(keywords["action"]) == "store_true":
                found[name.removeprefix("--")] = ast.Constant(False)
    for key, value in openrlhf_importer.DEFAULTS.items():
        assert key in found, key
        assert ast.literal_eval(found[key]) == value, key


def test_openrlhf_default_runs_without_arguments(tmp_path: Path) -> None:
    s = _written(tmp_path, "openrlhf")
    assert s["model"]["preset"] == "qwen2.5-7b"
    assert s["algorithm"]["mode"] == "one_step"
    assert s["algorithm"]["minibatches_per_step"] == 4


# --- AReaL ----------------------------------------------------------------------------------


def test_areal_example_yaml(tmp_path: Path) -> None:
    s = _written(tmp_path, "areal", str(AREAL / "gsm8k_grpo.yaml"))
    assert s["model"]["preset"] == "qwen2.5-1.5b"
    assert s["workload"]["prompts_per_step"] == 256  # ${train_dataset.batch_size}
    assert s["workload"]["group_size"] == 4
    assert s["workload"]["max_response_tokens"] == 1024
    assert s["cluster"]["rollout_engines"] == 4  # sglang:d4p1t1
    assert s["cluster"]["rollout_tp"] == 1
    assert s["cluster"]["learner_gpus"] == 4  # +d4p1t1
    assert s["algorithm"]["mode"] == "async"
    assert s["algorithm"]["max_staleness"] == 2
    assert s["algorithm"]["minibatches_per_step"] == 1
    # rollout.max_concurrent_rollouts: a cap over all engines, not a per-engine slot count
    assert s["algorithm"]["max_concurrent_rollouts"] == 256
    assert "max_num_seqs" not in s["cluster"]
    assert s["algorithm"]["reference_model"] is False  # kl_ctl 0.0
    assert s["algorithm"]["old_logprob_pass"] is True


def test_areal_per_engine_backends_and_overrides() -> None:
    s = import_trainer_config(
        "areal", AREAL / "qwen3_8b_backends.yaml", ("rollout.max_head_offpolicyness=0",)
    ).scenario
    assert s["model"]["preset"] == "qwen3-8b"
    assert s["cluster"]["rollout_engines"] == 8
    assert s["cluster"]["rollout_tp"] == 2
    assert s["cluster"]["learner_gpus"] == 16
    assert s["algorithm"]["minibatches_per_step"] == 4
    # AReaL counts versions per training step of 4 mini-batches: at most 0 steps behind is up
    # to 3 optimizer steps for the last mini-batch
    assert s["algorithm"]["max_staleness"] == 3
    # staleness 0 is on-policy: its learning rate is the baseline
    assert s["target"]["baseline_lr"] == pytest.approx(1.7e-5)


def test_areal_colocated_allocation() -> None:
    s = import_trainer_config(
        "areal", AREAL / "gsm8k_grpo.yaml", ("allocation_mode=sglang:d8t1|fsdp:d8",)
    ).scenario
    assert s["algorithm"]["mode"] == "sync_colocated"
    assert s["cluster"]["rollout_engines"] == 8


def test_areal_defaults_are_the_real_dataclass_defaults() -> None:
    tree = ast.parse((AREAL / "cli_args.py.txt").read_text())
    classes = {
        "gconfig": "GenerationHyperparameters",
        "rollout": "InferenceEngineConfig",
        "actor": "PPOActorConfig",
        "actor.optimizer": "OptimizerConfig",
        "": "BaseExperimentConfig",
    }
    fields: dict[str, dict] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in classes.values():
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    call = item.value
                    default = call
                    if isinstance(call, ast.Call):
                        kw = {k.arg: k.value for k in call.keywords}
                        default = kw.get("default")
                    fields.setdefault(node.name, {})[item.target.id] = default
    for key, value in areal_importer.DEFAULTS.items():
        section, _, leaf = key.rpartition(".")
        assert ast.literal_eval(fields[classes[section]][leaf]) == value, key


# --- errors ---------------------------------------------------------------------------------


def test_a_setup_simulate_would_refuse_is_written_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "big.yaml"
    result = _run(
        "import",
        "verl",
        str(VERL / "grpo_run" / ".hydra" / "config.yaml"),
        "actor_rollout_ref.model.path=Qwen/Qwen2.5-72B-Instruct",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "simulate will refuse this scenario as it stands" in result.output
    assert "do not fit an engine" in result.output
    assert yaml.safe_load(out.read_text())["model"]["preset"] == "qwen2.5-72b"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("pytorch",), "unknown framework 'pytorch'; allowed: verl, openrlhf, areal"),
        (("verl", "missing.yaml"), "missing.yaml: no such file"),
        (("verl", str(VERL / "run_qwen2-7b.sh")), "set model.params, model.layers"),
        (("areal", str(VERL / "ppo_trainer.yaml")), "not an AReaL experiment"),
        (("openrlhf", str(AREAL / "gsm8k_grpo.yaml")), "not OpenRLHF's arguments"),
        (
            (
                "verl",
                str(VERL / "grpo_run" / ".hydra" / "config.yaml"),
                "data.train_batch_size=500",
            ),
            "ppo_mini_batch_size=128 does not divide data.train_batch_size=500",
        ),
        (
            ("areal", str(AREAL / "gsm8k_grpo.yaml"), "allocation_mode=sglang:d4x1+d4"),
            "expected a backend and sizes",
        ),
        (
            ("openrlhf", str(ORLHF / "saved_args_async.json"), "--vllm.num_engines", "0"),
            "--vllm.num_engines=0",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    out = tmp_path / "out.yaml"
    result = _run("import", *args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()


def test_malformed_files_are_one_line_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "config.yaml"
    bad_yaml.write_text("data: {train_batch_size: [\n")
    bad_json = tmp_path / "args.json"
    bad_json.write_text('{"rollout.batch_size": 12,')
    for framework, path in (("verl", bad_yaml), ("areal", bad_yaml), ("openrlhf", bad_json)):
        with pytest.raises(ConfigError, match="malformed"):
            import_trainer_config(framework, path)


def test_missing_model_is_named() -> None:
    with pytest.raises(ConfigError, match=r"actor\.path is missing"):
        import_trainer_config("areal", AREAL / "gsm8k_grpo.yaml", ("actor.path=",))


# --- models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "preset"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
        ("/models/Qwen2.5-Math-7B", "qwen2.5-7b"),
        ("Qwen/Qwen2.5-Coder-32B-Instruct", "qwen2.5-32b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "qwen2.5-7b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-r1-distill-qwen-1.5b"),
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.1-70b"),
        ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-30b-a3b"),
        ("Qwen/Qwen3-235B-A22B", "qwen3-235b-a22b"),
        ("qwen/qwen3-0.6b/", "qwen3-0.6b"),
        ("/ckpt/global_step_100/actor/huggingface", None),
    ],
)
def test_model_ids_map_to_presets(model: str, preset: str | None) -> None:
    assert preset_for(model) == preset


def test_model_shapes_from_config_json() -> None:
    # KV bytes per token = 2 x layers x KV heads x head dim x 2 bytes
    assert MODELS["qwen2.5-7b"].kv_bytes_per_token == 2 * 28 * 4 * 128 * 2
    assert MODELS["qwen3-8b"].kv_bytes_per_token == 2 * 36 * 8 * 128 * 2
    assert MODELS["llama-3.2-1b"].attention_dim == 32 * 64 == MODELS["llama-3.2-1b"].hidden_size
    assert MODELS["qwen3-235b-a22b"].active_params < MODELS["qwen3-235b-a22b"].params
    # names are unique across presets
    names = [n.lower() for spec in MODELS.values() for n in spec.hf_names]
    assert len(names) == len(set(names))


# --- shell scripts --------------------------------------------------------------------------


def test_script_expansion() -> None:
    text = (
        "#!/bin/bash\n"
        'HOME_DIR=${HOME_DIR:-"/data/${USER_X:-me}"}\n'
        "a=3\n"
        "b=$(((a + 1) * 256))\n"
        'ARGS=(\n  --x ${b}  # comment\n  --y "two words"\n)\n'
        "python3 -m pkg.train_ppo_ray \\\n  ${ARGS[@]} --z=$HOME_DIR $UNSET\n"
    )
    import re

    script = parse_script(text, re.compile(r"train_ppo_ray"), "t.sh")
    assert script.variables["HOME_DIR"] == "/data/me"
    assert script.variables["b"] == "1024"
    assert script.arrays["ARGS"] == ["--x", "1024", "--y", "two words"]
    assert script.command[3:] == ["--x", "1024", "--y", "two words", "--z=/data/me", "$UNSET"]
    assert script.unresolved == {"UNSET"}


# --- the written YAML simulates and plans ---------------------------------------------------


@pytest.mark.parametrize("framework", sorted(IMPORTERS))
def test_written_yaml_simulates(tmp_path: Path, framework: str) -> None:
    out = tmp_path / "s.yaml"
    assert _run("import", framework, "--out", str(out)).exit_code == 0
    load_scenario(str(out))  # loads as written
    result = _run("simulate", str(out), "--steps", "3", "--out", str(tmp_path / "sim"), "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sim" / "summary.json").exists()


def test_written_yaml_is_a_plan_base(tmp_path: Path) -> None:
    scenario = tmp_path / "mine.yaml"
    assert _run("import", "areal", "--out", str(scenario)).exit_code == 0
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "base: {file: mine.yaml}\nbudget_gpus: 8\n"
        "space: {learner_gpus: [4], mode: [async], max_staleness: [1, 2]}\n"
        "evaluation: {steps: 3, screen: false}\n"
    )
    result = _run("plan", str(plan), "--out", str(tmp_path / "plan"), "--workers", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plan" / "plan.json").exists()


def test_the_gpu_type_is_given_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "mine.yaml"
    result = _run("import", "verl", "--gpu", "H20", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "hardware.gpu = H20  <- --gpu" in result.stdout
    assert "hardware.gpu = H100" not in result.stdout
    assert yaml.safe_load(out.read_text())["hardware"]["gpu"] == "H20"
    bad = _run("import", "verl", "--gpu", "TPU", "--out", str(tmp_path / "no.yaml"))
    assert bad.exit_code == 2 and "--gpu 'TPU': unknown GPU" in bad.stderr
    assert not (tmp_path / "no.yaml").exists()


@pytest.mark.parametrize("framework", ["verl", "openrlhf", "areal"])
def test_an_endless_file_is_not_read_to_the_end(tmp_path: Path, framework: str) -> None:
    result = _run("import", framework, "/dev/zero", "--out", str(tmp_path / "s.yaml"))
    assert result.exit_code == 2
    assert "/dev/zero: larger than 16 MiB; not a config file" in result.stderr
    assert not (tmp_path / "s.yaml").exists()
