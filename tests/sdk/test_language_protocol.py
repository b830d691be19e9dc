"""Text runs end to end in one process: contexts handed whole to TextModel.digest, per-part outputs, strings on the
wire, and bad text input (empty part, non-UTF-8, over-long part, interrupted context) refused clearly, never a hang."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.orchestrator.client import ModelClient
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.sdk import Output, TextModel, serve, wire


class Counting(TextModel):
    """Surprisal = number of characters of the part; layer = [part index in context, context length]; next word =
    the part upper-cased. Records every digest call."""

    model_id = "counting"
    max_context_tokens = 5
    max_batch_size = 3

    def __init__(self):
        self.calls: list[list[str]] = []

    def layers(self):
        return [Output("position", (2,))]

    def behaviour_outputs(self):
        return [Output("surprisal", (1,)), Output("next_word", (1,), dtype="str")]

    def count_tokens(self, text):
        return len(text.split("-"))

    def digest(self, parts, layers, behaviours):
        self.calls.append([p.id for p in parts])
        out = {}
        if "position" in layers:
            out["position"] = np.array([[i, len(parts)] for i in range(len(parts))], np.float32)
        if "surprisal" in behaviours:
            out["surprisal"] = np.array([[len(p.text)] for p in parts], np.float32)
        if "next_word" in behaviours:
            out["next_word"] = np.array([[p.text.upper()] for p in parts], dtype=object)
        return out


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.ENV_NONCE, raising=False)
    servers = []

    def start(model):
        address = f"unix://{tmp_path}/t{len(servers)}.sock"
        server, _ = serve(model, address, block=False)
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.stop(0)


def _run(address, stimuli, **kwargs):
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        info = client.info()
        return client.run(info, stimuli, [s[0] for s in stimuli], timeout_s=20, **kwargs)


def test_each_context_is_digested_once_whole_and_outputs_come_back_per_part(served):
    model = Counting()
    address = served(model)
    words = ["the", "cat", "sat", "on", "a", "mat", "ünïcode", "x"]
    stimuli = [(f"w{i}", w, "story1" if i < 6 else "story2") for i, w in enumerate(words)]
    result = _run(address, stimuli, layers=["position"], behaviours=["surprisal", "next_word"])
    assert model.calls == [[f"w{i}" for i in range(6)], ["w6", "w7"]]  # one call per context, although batches are 3
    np.testing.assert_array_equal(result.outputs["position"][:, 0], [0, 1, 2, 3, 4, 5, 0, 1])
    np.testing.assert_array_equal(result.outputs["position"][:, 1], [6] * 6 + [2] * 2)
    np.testing.assert_array_equal(result.outputs["surprisal"][:, 0], [len(w) for w in words])
    assert result.outputs["next_word"][:, 0].tolist() == [w.upper() for w in words]


def test_parts_without_context_id_are_contexts_of_their_own(served):
    model = Counting()
    result = _run(served(model), [("a", "one", ""), ("b", "two", ""), ("c", "three", "")], behaviours=["surprisal"])
    assert model.calls == [["a"], ["b"], ["c"]]
    assert result.outputs["surprisal"][:, 0].tolist() == [3, 3, 5]


class Batching(Counting):
    """Takes up to three whole contexts per digest_batch call; records the batches."""

    max_batch_contexts = 3

    def __init__(self):
        super().__init__()
        self.batches: list[list[list[str]]] = []

    def digest_batch(self, contexts, layers, behaviours):
        self.batches.append([[p.id for p in parts] for parts in contexts])
        return [self.digest(parts, layers, behaviours) for parts in contexts]


def test_a_model_that_wants_several_contexts_gets_them_whole_and_outputs_are_the_same(served):
    words = ["the", "cat", "sat", "on", "a", "mat", "ünïcode", "x", "end"]
    contexts = ["s1", "s1", "s2", "s3", "s3", "s3", "s4", "s5", "s5"]
    stimuli = [(f"w{i}", w, c) for i, (w, c) in enumerate(zip(words, contexts))]
    batching, plain = Batching(), Counting()
    got = _run(served(batching), stimuli, layers=["position"], behaviours=["surprisal", "next_word"])
    want = _run(served(plain), stimuli, layers=["position"], behaviours=["surprisal", "next_word"])
    # three whole contexts per call; the last two contexts (end of the run) in one call of two
    assert batching.batches == [[["w0", "w1"], ["w2"], ["w3", "w4", "w5"]], [["w6"], ["w7", "w8"]]]
    assert batching.calls == plain.calls  # every context digested whole, once
    for name in ("position", "surprisal", "next_word"):
        np.testing.assert_array_equal(got.outputs[name], want.outputs[name])


def test_digest_batch_returning_the_wrong_number_of_results_is_bad_output(served):
    class Short(Batching):
        def digest_batch(self, contexts, layers, behaviours):
            return super().digest_batch(contexts, layers, behaviours)[:-1]

    with pytest.raises(ModelFailure) as e:
        _run(served(Short()), [("a", "x", "c1"), ("b", "y", "c2")], behaviours=["surprisal"])
    assert e.value.reason == "BAD_OUTPUT" and "2 contexts" in str(e.value)


@pytest.mark.parametrize(
    ("stimuli", "message"),
    [
        ([("a", "fine", "c"), ("b", "   ", "c")], "empty text part"),
        ([("a", "x-x-x-x-x-x", "c")], "longer than the model's context of 5 tokens"),
        ([("a", "one", "c1"), ("b", "two", "c2"), ("c", "three", "c1")], "send its parts contiguously"),
    ],
)
def test_bad_text_input_is_refused_with_a_clear_bad_stimulus(served, stimuli, message):
    address = served(Counting())
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        info = client.info()
        # The client refuses empty parts itself; send raw messages to test the server's own check.
        requests = [pb.RunRequest(config=pb.RunConfig(behaviours=["surprisal"]))] + [
            pb.RunRequest(stimulus=pb.Stimulus(id=s, text=t, context_id=c)) for s, t, c in stimuli
        ]
        with pytest.raises(grpc.RpcError) as caught:
            list(client.stub.Run(iter(requests), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert (wire.ERROR_REASON_KEY, "BAD_STIMULUS") in tuple(caught.value.trailing_metadata())
    assert info.modality == "text"


def test_non_utf8_text_bytes_are_bad_stimulus_not_a_crash(served):
    address = served(Counting())
    config = pb.RunRequest(config=pb.RunConfig(behaviours=["surprisal"])).SerializeToString()
    # RunRequest{stimulus: Stimulus{id: "a", text: b"\xff\xfe"}} written by hand: protobuf refuses to build it.
    stimulus = b"\x0a\x01a" + b"\x1a\x02\xff\xfe"
    bad = b"\x12" + bytes([len(stimulus)]) + stimulus
    with grpc.insecure_channel(address) as channel:
        ModelClient(address).wait_until_serving(5)
        run = channel.stream_stream(f"/{wire.SERVICE_NAME}/Run", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            list(run(iter([config, bad]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in caught.value.details()


def test_the_client_refuses_bad_text_before_sending(served):
    with pytest.raises(ValueError, match="empty text part"):
        _run(served(Counting()), [("a", "", "c")], behaviours=["surprisal"])
    with pytest.raises(ValueError, match="not valid UTF-8"):
        _run(served(Counting()), [("a", "bad \udcff surrogate", "c")], behaviours=["surprisal"])


def test_a_string_output_that_is_not_a_string_is_bad_output(served):
    class Broken(Counting):
        def digest(self, parts, layers, behaviours):
            return {"next_word": np.array([[1.5] for _ in parts], dtype=object)}

    with pytest.raises(ModelFailure) as caught:
        _run(served(Broken()), [("a", "x", "c")], behaviours=["next_word"])
    assert caught.value.failure == FailureClass.BAD_OUTPUT


def test_string_codec_round_trips_and_rejects_hostile_bytes():
    values = np.array(["", "the", "ünïcode", "x" * wire.MAX_STRING_BYTES], dtype=object)
    data = wire.encode_strings(values)
    assert wire.decode_strings(data, 4).tolist() == values.tolist()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        wire.decode_strings(b"\x02\x00\x00\x00\xff\xfe", 1)
    with pytest.raises(ValueError, match="claims"):
        wire.decode_strings((10**6).to_bytes(4, "little"), 1)
    with pytest.raises(ValueError, match="after its"):
        wire.decode_strings(data + b"\x00", 4)
    with pytest.raises(ValueError, match="at most"):
        wire.encode_strings(["x" * (wire.MAX_STRING_BYTES + 1)])
