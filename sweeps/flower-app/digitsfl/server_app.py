"""The ServerApp: FedAvg over the SuperNodes, the global model checked on held-out data."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digitsfl import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured number of FedAvg rounds."""
    config = context.run_config
    validation = task.load_validation(config)
    fail_after = int(config["server-fail-at-round"])

    def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        if fail_after and server_round >= fail_after:
            raise RuntimeError(f"fault drill: the ServerApp fails after round {server_round}")
        model = task.new_model(config)
        model.set_weights(arrays.to_numpy_ndarrays())
        loss, accuracy = task.evaluate(model, validation.x_test, validation.y_test)
        return MetricRecord({"global_loss": loss, "global_acc": accuracy})

    nodes = int(config["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        min_available_nodes=nodes,
        min_train_nodes=1,
        min_evaluate_nodes=1,
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.new_model(config).weights),
        train_config=ConfigRecord({}),
        num_rounds=int(config["num-server-rounds"]),
        evaluate_fn=global_evaluate,
    )
