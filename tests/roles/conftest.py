"""Tiny models and small INSECURE parameters for the client/server, service and CLI tests."""
import warnings

import numpy as np
import pytest

import ckks
from hemet import layers as L
from hemet.graph import INPUT, Graph
from hemet.modelfile import Model, save
from hemet.zoo import random_weights

LOG_N = 10




def tiny_model(seed=1, channels=4, classes=4) -> Model:
    """normalize -> conv 3x3 + bn + poly -> avgpool 2 -> conv 1x1 -> global pool, on 3x8x8."""
    nodes = [L.Node("normalize", L.Normalize((0.5,) * 3, (0.25,) * 3), (INPUT,))]
    nodes += L.ConvBNAct(3, channels, 3, act="poly").nodes("c1", "normalize")
    nodes += [L.Node("pool", L.AvgPool(2), ("c1_act",)),
              L.Node("classifier", L.Conv2d(channels, classes, 1, 1, 0, 1, True), ("pool",)),
              L.Node("gap", L.GlobalAvgPool(), ("classifier",))]
    g = Graph(f"tiny-{seed}", nodes, classes, input_shape=(3, 8, 8))
    return Model(g, random_weights(g, seed))


def insecure_params(depth, log_n=LOG_N, dnum=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckks.SecurityWarning)
        return ckks.Parameters(log_n=log_n, depth=depth, dnum=dnum, allow_insecure=True)


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def params(model):
    return insecure_params(model.graph.depth())


@pytest.fixture(scope="session")
def server(model, params):
    from hemet.roles import Server
    return Server(model, params)


@pytest.fixture(scope="session")
def client(server):
    from hemet.roles import Client
    return Client(server.public_info())


@pytest.fixture(scope="session")
def bundle(client):
    return client.key_bundle()


@pytest.fixture(scope="session")
def parts(client):
    return list(client.key_parts())


@pytest.fixture(scope="session")
def open_session(server, bundle, parts):
    """A ready session: the key bundle, then every key part."""
    def make():
        s = server.open_session(bundle)
        for p in parts:
            server.add_keys(s, p)
        assert s.ready
        return s
    return make


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, model):
    base = tmp_path_factory.mktemp("models") / "tiny"
    save(base, model.graph, model.weights)
    return str(base) + ".json"


@pytest.fixture
def image():
    return np.random.default_rng(5).uniform(0, 1, (3, 8, 8))
