"""The simulation models (pure) and the two simulated predict exercises, end to end through
the pages (no sandbox is involved: a simulation must never start one)."""
import math

import pytest
from django.test import Client

from explainer.course import content, simulations
from explainer.course.models import PredictionRun


# ---------------------------------------------------------------- direct server return

def test_a_stream_counts_headers_and_delayed_acks():
    data, acks, segments = simulations.stream(2_000_000)
    assert segments == math.ceil(2_000_000 / 1448) == 1382
    assert data == 2_000_000 + 1382 * 52
    assert acks == 691 * 52 == 35_932
    assert simulations.stream(0) == (0, 0, 0)


def test_dsr_download_the_balancer_carries_the_clients_acks():
    r = simulations.dsr_bytes(400, 2_000_000)
    # client's packets: SYN 60, handshake ACK 52, request 400 + 52, ACKs 35,932, FIN + ACK 104
    assert r["client_to_balancer_b"] == 60 + 52 + 452 + 35_932 + 104 == 36_600
    assert r["backend_to_client_b"] == 60 + (2_000_000 + 1382 * 52) + 52 + 104
    assert r["biggest_inbound"] == "acks"
    assert 1.5 < r["dsr_share_pct"] < 2.0  # "roughly 2 %", not the request's 0.02 %
    assert 50 <= r["saving_factor"] < 60  # the lesson's "about fifty times less"
    assert r["dsr_balancer_b"] + r["backend_to_client_b"] == r["total_b"] == r["relay_balancer_b"]


def test_dsr_upload_saves_almost_nothing():
    r = simulations.dsr_bytes(10_000_000, 200)
    assert r["biggest_inbound"] == "request"
    assert r["dsr_share_pct"] > 97
    assert r["saving_factor"] < 1.05


def test_a_tunnel_adds_bytes_per_packet_only_on_the_balancer_to_backend_hop():
    plain, tunnel = simulations.dsr_bytes(400, 2_000_000), simulations.dsr_bytes(400, 2_000_000, tunnel_b=20)
    packets = 2 + 1 + 691 + 2
    assert tunnel["balancer_to_backend_b"] - plain["balancer_to_backend_b"] == 20 * packets
    assert tunnel["client_to_balancer_b"] == plain["client_to_balancer_b"]


def test_dsr_refuses_nonsense():
    with pytest.raises(ValueError, match="mss"):
        simulations.dsr_bytes(400, 2_000, mss=10)


# ---------------------------------------------------------------- DNS scaling

@pytest.fixture(scope="module")
def alb():
    return simulations.alb_vs_nlb()


def test_scale_out_reaches_clients_over_one_ttl(alb):
    # Half the clients have refreshed after half a TTL; they put half their requests on new nodes.
    assert 20 <= alb["new_share_30s"] <= 30
    assert 55 <= alb["settle_s"] <= 59
    # TTL-ignoring clients (5 %) never see the new nodes: 95 % × 50 %.
    assert 46 <= alb["new_share_after_ttl"] <= 49


def test_only_clients_ignoring_the_ttl_hit_the_stopped_node(alb):
    assert alb["who_failed"] == "stale" and alb["failed_alb"] > 0
    assert alb["failed_nlb"] == 0


def test_everyone_fails_when_the_node_stops_before_one_ttl():
    r = simulations.alb_vs_nlb(stop_after_s=10)
    assert r["who_failed"] == "all"


def test_nobody_fails_when_every_client_respects_the_ttl():
    r = simulations.alb_vs_nlb(stale_share=0)
    assert r["who_failed"] == "none" and r["failed_alb"] == 0
    assert 49 <= r["new_share_after_ttl"] <= 51


def test_the_simulation_is_deterministic_for_a_seed():
    a, b = simulations.alb_vs_nlb(seed=3), simulations.alb_vs_nlb(seed=3)
    assert a == b


# ---------------------------------------------------------------- the exercises

def test_simulated_exercises_load_and_are_labelled():
    cat = content.load()
    assert cat.problems == []
    for slug in ("dsr-bytes", "alb-dns-scaling"):
        ex = cat.exercise(slug)
        assert ex.scenario == "simulation" and ex.title.startswith("Simulation:")
        assert "This is a simulation" in ex.story
    assert {"dsr-bytes", "alb-dns-scaling"} <= set(cat.lesson("l4-vs-l7").predict)


def test_a_simulation_may_not_read_an_output_its_model_lacks(tmp_path):
    from explainer.course.services.predict import observation_problem

    ex = content.load().exercise("dsr-bytes")
    bad = ex.predict[0].model_copy(update={"observe": "sim:download:nonsense"})
    assert "has no output 'nonsense'" in observation_problem(ex, bad)
    bad = ex.predict[0].model_copy(update={"observe": "sim:nocase:total_b"})
    assert "cases: download, upload" in observation_problem(ex, bad)
    bad = ex.predict[0].model_copy(update={"observe": "backend:1"})
    assert "one observation of a simulation" in observation_problem(ex, bad)


@pytest.mark.django_db
def test_predicting_the_dsr_exercise_scores_against_the_model():
    client = Client(enforce_csrf_checks=True)
    page = client.get("/course/predict/dsr-bytes/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="sim-label"' in body and "What the simulation computes" in body
    assert "The proxy config it applies" not in body
    csrf = page.cookies["csrftoken"].value
    resp = client.post("/course/predict/dsr-bytes/run", {
        "csrfmiddlewaretoken": csrf, "download_bytes": "800", "download_biggest": "request",
        "download_share": "0.02", "upload_share": "98"})
    assert resp.status_code == 302
    run = PredictionRun.objects.get(exercise_slug="dsr-bytes")
    assert run.status == "done" and not run.sandbox_id  # no sandbox was started
    assert run.observed == {"download_bytes": 36_600, "download_biggest": "acks",
                            "download_share": 1.74, "upload_share": 98.29}
    assert run.field_scores == {"download_bytes": 0.0, "download_biggest": 0.0,
                                "download_share": 0.0, "upload_share": 1.0}
    result = client.get(resp["Location"]).content.decode()
    assert "What the simulation gave" in result and "The simulation gave" in result
    assert "Case “download” (simulated)" in result and "36600 B" in result


@pytest.mark.django_db
def test_predicting_the_alb_exercise_shows_the_timeline():
    client = Client(enforce_csrf_checks=True)
    csrf = client.get("/course/predict/alb-dns-scaling/").cookies["csrftoken"].value
    resp = client.post("/course/predict/alb-dns-scaling/run", {
        "csrfmiddlewaretoken": csrf, "share_30s": "25", "settle": "60", "share_later": "47.5",
        "who": "stale", "nlb_failed": "0"})
    run = PredictionRun.objects.get(exercise_slug="alb-dns-scaling")
    assert run.score == 1.0, (run.observed, run.field_scores)
    result = client.get(resp["Location"]).content.decode()
    assert "Simulated timeline of case run" in result


def test_the_explanations_quote_the_models_numbers():
    cat = content.load()
    dl = simulations.dsr_bytes(400, 2_000_000)
    up = simulations.dsr_bytes(10_000_000, 200)
    text = " ".join(cat.exercise("dsr-bytes").explanation.split())
    assert f"{math.ceil(2_000_000 / 1448):,} segments" in text
    assert f"{dl['response_acks_b'] // 52} ACKs of 52 bytes, **{dl['response_acks_b']:,} bytes**" in text
    assert f"about **{dl['dsr_balancer_b'] / 1000:.1f} kB**" in text
    assert f"roughly **{dl['dsr_share_pct']:.1f} %**" in text
    assert f"about {round(dl['saving_factor'])} times less" in text
    assert f"about **{round(up['dsr_share_pct'])} %**" in text
    assert f"(ACKs ≈ {691 * 40 / 1000:.1f} kB)" in text
    alb = simulations.alb_vs_nlb()
    text = " ".join(cat.exercise("alb-dns-scaling").explanation.split())
    assert f"**~{round(alb['new_share_30s'])} %**" in text
    assert f"**~{alb['new_share_after_ttl']} %**" in text
    assert "**0** failures" in text and alb["failed_nlb"] == 0


# ---------------------------------------------------------------- balls into bins, Maglev

def test_two_choices_beat_random_by_the_books_numbers():
    r = simulations.balls_into_bins()
    assert r["mean"] == 1.0
    assert 4 <= r["max_random"] <= 6 and r["max_two"] == 3 and r["max_three"] <= 3
    assert simulations.balls_into_bins() == r  # seeded
    small = simulations.balls_into_bins(bins=10, balls=10, trials=5, seed=1)
    assert small["max_two"] <= small["max_random"]


def test_maglev_moves_about_the_leaving_share_and_modulo_almost_everything():
    r = simulations.maglev_disruption()
    assert 85 <= r["modulo_moved_pct"] <= 95  # kept only when h % 10 == h % 9
    assert 9 <= r["maglev_gone_share_pct"] <= 11  # b10 held about a tenth
    assert 0 < r["maglev_others_moved_pct"] < 2  # small, not zero (unlike a ring)
    assert r["maglev_moved_pct"] == pytest.approx(
        r["maglev_gone_share_pct"] + r["maglev_others_moved_pct"], abs=0.1)
    assert r["maglev_slot_spread"] <= 1


def test_the_new_simulations_explanations_quote_their_numbers():
    cat = content.load()
    b = simulations.balls_into_bins()
    text = " ".join(cat.exercise("p2c-balls").explanation.split())
    assert f"typically holds **{b['max_random']}** ({b['max_random_range'].replace('–', ' to ')} across the runs)" in text
    assert f"down to **{b['max_two']}** in every run" in text and b["max_two_range"] == "3–3"
    m = simulations.maglev_disruption()
    text = " ".join(cat.exercise("maglev-disruption").explanation.split())
    assert f"about **{round(m['modulo_moved_pct'])} %**" in text
    assert f"about **{round(m['maglev_moved_pct'])} %**" in text
    assert f"about **{m['maglev_others_moved_pct']:.1f} %**" in text


@pytest.mark.django_db
@pytest.mark.parametrize("slug,answers,shown", [
    ("p2c-balls", {"random": "5", "two": "3", "three": "2"}, "busiest backend, two choices (median)"),
    ("maglev-disruption", {"modulo": "90", "maglev": "10", "others": "0.4"},
     "keys that change backend, Maglev"),
    ("flapping", {"flips_one": "238", "out_one": "21", "flips_two": "16", "out_five": "9.3"},
     "state changes (healthy ↔ unhealthy)"),
])
def test_the_new_simulations_run_from_their_pages(slug, answers, shown):
    client = Client(enforce_csrf_checks=True)
    csrf = client.get(f"/course/predict/{slug}/").cookies["csrftoken"].value
    resp = client.post(f"/course/predict/{slug}/run", {"csrfmiddlewaretoken": csrf, **answers})
    assert resp.status_code == 302
    run = PredictionRun.objects.get(exercise_slug=slug)
    assert run.score == 1.0, (run.observed, run.field_scores)
    page = client.get(resp["Location"]).content.decode()
    assert shown in page and "What the simulation gave" in page


def test_flapping_runs_the_proxys_health_state_machine():
    one = simulations.flapping(healthy_threshold=1, unhealthy_threshold=1)
    assert one["probes"] == 720
    assert abs(one["flips"] - 2 * 720 * 0.2 * 0.8) < 40  # a flip at every change of result
    assert 15 <= one["out_pct"] <= 25  # about the failure rate
    two = simulations.flapping(healthy_threshold=2, unhealthy_threshold=3)
    five = simulations.flapping(healthy_threshold=5, unhealthy_threshold=3)
    assert two["flips"] < one["flips"] / 5 and two["flips"] % 2 == 0  # out, back, out, back
    assert five["out_pct"] > two["out_pct"]  # a higher healthy threshold: longer absences
    never = simulations.flapping(fail_rate=0.0)
    assert never["flips"] == 0 and never["out_pct"] == 0
    text = " ".join(content.load().exercise("flapping").explanation.split())
    assert f"(**{one['flips']}** in this run)" in text and f"out **{one['out_pct']:g} %**" in text
    assert f"(**{two['flips']}** changes: {two['flips'] // 2} out, {two['flips'] // 2} back)" in text
    assert f"out **{two['out_pct']:g} %** of the time" in text and f"out **{five['out_pct']:g} %**" in text
