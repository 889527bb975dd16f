"""The ClientApp: trains on its partition and evaluates the global model on its test split.

Each evaluation is also printed as one metrics line (`digitsfl metrics {...}`), which SEEL reads
from the SuperNode's output as that party's result.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digitsfl import task

app = ClientApp()


def _setup(msg: Message, context: Context) -> tuple[task.Model, task.Split, int]:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    split = task.load_partition(context.run_config, partition_id, num_partitions)
    model = task.new_model(context.run_config)
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    return model, split, partition_id


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD from the global weights."""
    model, split, partition_id = _setup(msg, context)
    round_ = int(msg.content["config"]["server-round"])
    fail_at = int(context.run_config["fail-at-round"])
    if partition_id == 0 and fail_at and round_ >= fail_at:
        raise RuntimeError(f"fault drill: partition 0 fails in round {round_}")
    task.train(model, split, context.run_config, round_)
    loss, accuracy = task.evaluate(model, split.x_train, split.y_train)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.weights),
            "metrics": MetricRecord(
                {"train_loss": loss, "train_acc": accuracy, "num-examples": len(split.y_train)}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model on this node's test split."""
    model, split, partition_id = _setup(msg, context)
    loss, accuracy = task.evaluate(model, split.x_test, split.y_test)
    metrics = {"loss": loss, "acc": accuracy, "num-examples": len(split.y_test)}
    print(f"digitsfl metrics {metrics!r}", flush=True)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
