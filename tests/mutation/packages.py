"""What `run_mutation.py` mutates and with which tests: per package, the files to mutate, the
unit test files and the 2-rank MPI test files that exercise them, and the kill tests written for
its survivors (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

#: package -> the tests written for its surviving mutants, named after the behaviour they
#: protect (``--after`` reruns the survivors against these)
KILLS: dict[str, list[str]] = {
    "kernels": ["tests/unit/test_kernels_chunk_bounds.py",
             "tests/unit/test_kernels_fused_finiteness.py",
             "tests/unit/test_kernels_topk_collect.py"],
    "compress": ["tests/unit/test_compress_k_from_ratio.py",
             "tests/unit/test_compress_natural_rounding.py"],
    "algorithms": ["tests/unit/test_algorithms_non_finite.py",
             "tests/unit/test_algorithms_option_checks.py"],
    "comm": ["tests/unit/test_comm_timing_wrappers.py",
             "tests/mpi/test_transport_variable_sizes.py",
             "tests/mpi/test_transport_benchmarks.py"],
    "topologies": ["tests/unit/test_topologies_edge_cases.py"],
    "methods": ["tests/unit/test_ef21_variant_option_values.py",
                "tests/unit/test_gossip_first_non_finite_step.py",
                "tests/unit/test_gossip_declared_codec_work.py"],
    "schedule": ["tests/unit/test_one_peer_schedules.py"],
    "runner": ["tests/unit/test_run_ending_signals.py", "tests/unit/test_step_loop_schedule.py",
               "tests/unit/test_resume_refusals.py", "tests/unit/test_resume_changed_config.py",
               "tests/unit/test_checkpoint_file_integrity.py",
               "tests/unit/test_run_control_leaves_no_step_behind.py",
               "tests/unit/test_step_loop_odd_resume.py"],
    "watchdog": ["tests/unit/test_watchdog_exit_sends.py",
                 "tests/unit/test_watchdog_peers_and_states.py",
                 "tests/unit/test_watchdog_heartbeat_rounds.py",
                 "tests/unit/test_watchdog_some_peers_silent.py"],
    "torch": ["tests/unit/test_torch_optimizer_empty_groups.py",
              "tests/unit/test_torch_divergence_check_interval.py",
              "tests/unit/test_bucket_progress_and_repr.py",
              "tests/unit/test_torch_default_check_every.py",
              "tests/unit/test_torch_frozen_rest_broadcast.py",
              "tests/unit/test_torch_find_unused_steps_the_used.py",
              "tests/unit/test_torch_averaged_model.py"],
    "lowrank": ["tests/unit/test_half_kernels_index_inside_their_arrays.py"],
    # (the kill tests of the old binomial tree's run at 39b60fd are on branch mutB-kills-39b60fd)
    "tree": ["tests/unit/test_aggregation_of_a_read_master.py",
             "tests/unit/test_tree_byte_counts.py"],
}


def _unit(files: list[str]) -> list[str]:
    return [f for f in files if f.startswith("tests/unit/")]


def _mpi(files: list[str]) -> list[str]:
    return [f for f in files if f.startswith("tests/mpi/")]


#: package -> (files to mutate, unit test files, 2-rank MPI test files) exercising them
PACKAGES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "kernels": ([f"kernels/{f}.py" for f in ("bits", "fused", "quant", "randk", "reduce", "rng",
                                             "topk")],
                ["tests/unit/test_kernels.py", "tests/unit/test_compress_oracles.py",
                 "tests/unit/test_compress_topk.py", "tests/unit/test_compress.py",
                 "tests/unit/test_hot_path.py", "tests/unit/test_compress_stats.py",
                 "tests/unit/test_algorithms_pure.py", *KILLS["kernels"]],
                []),
    "compress": ([f"decomp/compress/{f}.py" for f in (
        "_common", "_ref", "_rng", "_wire", "aggregate", "base", "identity", "natural", "qsgd",
        "randk", "scaled", "sign", "topk")],
                 ["tests/unit/test_compress_oracles.py", "tests/unit/test_compress.py",
                  "tests/unit/test_compress_stats.py", "tests/unit/test_compress_topk.py",
                  "tests/unit/test_compress_registry.py", "tests/unit/test_hot_path.py",
                  "tests/unit/test_kernels.py", *KILLS["compress"]],
                 []),
    "algorithms": ([f"decomp/algorithms/{f}.py" for f in (
        "allreduce", "base", "choco", "dcd", "decentralized_base", "dense", "dpsgd", "ecd", "ef",
        "ef21", "ef21_sgdm", "replica", "sgdm")],
                   ["tests/unit/test_algorithms_pure.py", "tests/unit/test_registry.py",
                    "tests/unit/test_directed_mixing.py", "tests/unit/test_decentralized.py",
                    "tests/unit/test_sim_masterworker.py", *KILLS["algorithms"]],
                   ["tests/mpi/test_masterworker_vs_sim.py",
                    "tests/mpi/test_decentralized_vs_sim.py",
                    "tests/mpi/test_decentralized_transport.py"]),
    "comm": ([f"decomp/comm/{f}.py" for f in ("counters", "masterworker", "neighborhood",
                                              "timing")],
             ["tests/unit/test_algorithms_pure.py", *_unit(KILLS["comm"])],
             ["tests/mpi/test_transport.py", "tests/mpi/test_decentralized_transport.py",
              "tests/mpi/test_decentralized_vs_sim.py", "tests/mpi/test_masterworker_vs_sim.py",
              *_mpi(KILLS["comm"])]),
    "topologies": ([f"topologies/{f}.py" for f in (
        "adjacency", "comm", "factory", "graphs", "mixing", "sampled", "schedule", "validation",
        "weights")],
                   ["tests/unit/test_topologies.py", "tests/unit/test_topologies_validation.py",
                    "tests/unit/test_directed_mixing.py", "tests/unit/test_topologies_cli.py",
                    *KILLS["topologies"]],
                   ["tests/mpi/test_topology_comm.py", "tests/mpi/test_directed_mixing.py",
                    "tests/mpi/test_decentralized_vs_sim.py"]),
    "methods": ([f"decomp/algorithms/{f}.py" for f in (
        "beer", "deepsqueeze", "edge_replica", "ef21_bc", "ef21_pp")],
                ["tests/unit/test_beer.py", "tests/unit/test_ef21_variants.py",
                 "tests/unit/test_deepsqueeze.py", "tests/unit/test_invariants.py",
                 "tests/unit/test_time_varying.py", "tests/unit/test_checkpoint_values.py",
                 "tests/unit/test_netmodel.py", "tests/unit/test_class_declarations.py",
                 "tests/unit/test_protocols.py", *_unit(KILLS["methods"])],
                ["tests/mpi/test_beer_vs_sim.py", "tests/mpi/test_ef21_variants_vs_sim.py",
                 "tests/mpi/test_deepsqueeze_vs_sim.py", "tests/mpi/test_time_varying.py",
                 *_mpi(KILLS["methods"])]),
    "schedule": (["topologies/schedule.py"],
                 ["tests/unit/test_topologies.py", "tests/unit/test_topologies_edge_cases.py",
                  "tests/unit/test_time_varying.py", *_unit(KILLS["schedule"])],
                 ["tests/mpi/test_topology_comm.py", *_mpi(KILLS["schedule"])]),
    "runner": ([f"decomp/runner/{f}.py" for f in ("checkpoint", "resume", "lifecycle", "drive")],
               ["tests/unit/test_checkpoint_values.py", "tests/unit/test_checkpoint_layout.py",
                "tests/unit/test_checkpoint_faults.py", "tests/unit/test_collective_checks.py",
                "tests/unit/test_progress_metadata.py", "tests/unit/test_torch_saving.py",
                *_unit(KILLS["runner"])],
               ["tests/mpi/test_resume.py", *_mpi(KILLS["runner"])]),
    "watchdog": (["decomp/comm/watchdog.py"],
                 ["tests/unit/test_watchdog_timing.py", "tests/unit/test_watchdog_progress.py",
                  *_unit(KILLS["watchdog"])],
                 _mpi(KILLS["watchdog"])),
    "torch": ([f"decomp/torch/{f}.py" for f in ("optimizer", "buckets")],
              ["tests/unit/test_torch_optimizer.py", "tests/unit/test_torch_buckets.py",
               *_unit(KILLS["torch"])],
              ["tests/mpi/test_torch_optimizer.py", "tests/mpi/test_torch_overlap.py",
               *_mpi(KILLS["torch"])]),
    "lowrank": (["decomp/algorithms/powersgd.py", "decomp/algorithms/powergossip.py",
                 "decomp/compress/wire16.py", "kernels/half.py"],
                ["tests/unit/test_powersgd.py", "tests/unit/test_powergossip.py",
                 "tests/unit/test_wire16.py", "tests/unit/test_kernels_half.py",
                 "tests/unit/test_invariants.py", "tests/unit/test_class_declarations.py",
                 *_unit(KILLS["lowrank"])],
                ["tests/mpi/test_powersgd_vs_sim.py", "tests/mpi/test_powergossip_vs_sim.py",
                 "tests/mpi/test_wire16_vs_sim.py", *_mpi(KILLS["lowrank"])]),
    # the new reduce-scatter tree (issue 23); the thread transport runs the same rounds as MPI
    "tree": (["decomp/comm/tree.py", "decomp/compress/merge.py", "decomp/comm/nodes.py"],
             ["tests/unit/test_tree_schedule.py",
              "tests/unit/test_threads.py::test_every_master_worker_method_on_the_tree_equals_its_reference",
              "tests/unit/test_threads.py::test_the_tree_on_uneven_node_layouts_equals_its_reference",
              "tests/unit/test_netmodel.py::test_the_tree_is_priced_from_the_class_pattern",
              "tests/unit/test_class_declarations.py::test_the_tree_pattern_is_the_bytes_the_reference_counts",
              *_unit(KILLS["tree"])],
             _mpi(KILLS["tree"])),
}
