from kagent.controller.index import DependencyIndex

A = ("Agent", "ns", "a")
B = ("Agent", "ns", "b")
T = ("Tool", "ns", "t")
S = ("Secret", "ns", "s")


def test_dependents_follow_records() -> None:
    index = DependencyIndex()
    index.record(A, {T, S})
    index.record(B, {T})
    assert index.dependents(T) == {A, B}
    assert index.dependents(S) == {A}
    index.record(A, {T})  # A no longer uses the secret
    assert index.dependents(S) == set()
    assert not index.is_used(S)
    index.forget(B)
    assert index.dependents(T) == {A}
    assert index.dependents(("Tool", "other", "t")) == set()
