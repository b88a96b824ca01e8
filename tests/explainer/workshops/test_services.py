"""Workshop services and selectors, on the database only (no sandboxes, no sockets)."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from explainer.workshops import identity, selectors
from explainer.workshops.models import Activity, Participant
from explainer.workshops.services import workshops
from explainer.workshops.services.workshops import CODE_ALPHABET, WorkshopError

pytestmark = pytest.mark.django_db


def test_only_instructors_create_workshops(instructor):
    plain = get_user_model().objects.create_user("pat", password="x-Long-pass-99")
    with pytest.raises(WorkshopError) as err:
        workshops.create_workshop(instructor=plain, title="Mine")
    assert err.value.status == 403 and "createinstructor" in err.value.message
    w = workshops.create_workshop(instructor=instructor, title="  Load   balancing ")
    assert w.title == "Load balancing"
    assert len(w.code) == 6 and set(w.code) <= set(CODE_ALPHABET)
    assert w.activities.filter(kind="workshop").exists()


def test_superuser_can_run_workshops():
    root = get_user_model().objects.create_superuser("root", password="x-Long-pass-99")
    assert workshops.instructor_can_run(root)
    assert workshops.create_workshop(instructor=root, title="By root").code


def test_join_codes_are_typed_loosely_and_checked(workshop):
    code = workshop.code
    assert workshops.open_workshop(f" {code[:3].lower()}-{code[3:].lower()} ") == workshop
    with pytest.raises(WorkshopError) as err:
        workshops.open_workshop("ZZZZZZ")
    assert err.value.status == 404 and "check it with your instructor" in err.value.message
    with pytest.raises(WorkshopError) as err:
        workshops.open_workshop("")
    assert err.value.field == "code"


def test_join_rename_and_duplicate_names(workshop):
    ada, created = workshops.join(workshop=workshop, learner_key="session:a", display_name=" Ada  L ")
    assert created and ada.display_name == "Ada L"
    again, created = workshops.join(workshop=workshop, learner_key="session:a", display_name="Ada")
    assert not created and again.pk == ada.pk and again.display_name == "Ada"
    with pytest.raises(WorkshopError) as err:
        workshops.join(workshop=workshop, learner_key="session:b", display_name="ADA")
    assert err.value.status == 409 and "already called" in err.value.message
    for bad in ("", "   ", "x" * 41, "a\x00b"):
        with pytest.raises(WorkshopError):
            workshops.join(workshop=workshop, learner_key="session:c", display_name=bad)
    texts = list(workshop.activities.values_list("text", flat=True))
    assert "Ada L joined" in texts and "Ada L is now called Ada" in texts


def test_an_ended_workshop_refuses_joins(workshop, sandbox_settings):
    workshops.join(workshop=workshop, learner_key="session:a", display_name="Ada")
    result = workshops.end_workshop(workshop)
    assert result["ok"] and workshop.ended_at is not None
    with pytest.raises(WorkshopError) as err:
        workshops.open_workshop(workshop.code)
    assert err.value.status == 410 and "has ended" in err.value.message
    with pytest.raises(WorkshopError):
        workshops.join(workshop=workshop, learner_key="session:z", display_name="Zed")


def test_hand_and_presence(workshop):
    ada, _ = workshops.join(workshop=workshop, learner_key="session:a", display_name="Ada")
    workshops.set_hand(ada, True)
    workshops.set_hand(ada, True)  # no second line for the same hand
    assert workshop.activities.filter(kind=Activity.Kind.HAND).count() == 1
    workshops.page_opened(ada.pk)
    ada.refresh_from_db()
    assert ada.open_pages == 1 and selectors.is_online(ada, timezone.now())
    workshops.page_closed(ada.pk)
    workshops.page_closed(ada.pk)  # never below zero
    ada.refresh_from_db()
    assert ada.open_pages == 0 and not selectors.is_online(ada, timezone.now())
    workshops.set_hand(ada, False)
    ada.refresh_from_db()
    assert ada.hand_raised_at is None


def test_presenter_mode_keeps_only_what_a_follower_can_apply(workshop):
    with pytest.raises(WorkshopError):
        workshops.update_view(workshop, {"tab": "tab-faults"})
    started = workshops.start_presenting(workshop)
    assert started["present"]["on"] and started["present"]["sandbox"] == "default"
    assert started["present"]["screen_url"] == f"/workshops/w/{workshop.code}/screen/"
    workshops.update_view(workshop, {"tab": "tab-faults", "scroll": 7, "spot": "topo-h"})
    workshops.update_view(workshop, {"tab": "<script>", "scroll": "x", "spot": "A B"})
    workshop.refresh_from_db()
    assert workshop.present_view == {"seq": 2}
    workshops.update_view(workshop, {"tab": "tab-health", "scroll": 0.25})
    workshop.refresh_from_db()
    assert workshop.present_view == {"tab": "tab-health", "scroll": 0.25, "seq": 3}
    with pytest.raises(WorkshopError):
        workshops.start_presenting(workshop, "not a sandbox!")
    stopped = workshops.stop_presenting(workshop)
    assert stopped["present"]["on"] is False


def test_cockpit_puts_hands_first_then_the_longest_stuck(workshop):
    now = timezone.now()
    rows = {}
    for name, joined_min in (("Ada", 5), ("Ben", 30), ("Cy", 12)):
        p, _ = workshops.join(workshop=workshop, learner_key=f"session:{name}", display_name=name)
        Participant.objects.filter(pk=p.pk).update(joined_at=now - timedelta(minutes=joined_min),
                                                   open_pages=1, last_seen_at=now)
        rows[name] = p
    snap = selectors.cockpit(workshop, now=now)
    assert [r["name"] for r in snap["learners"]] == ["Ben", "Cy", "Ada"]
    assert snap["stuck_longest"]["name"] == "Ben" and snap["stuck_longest"]["stuck_s"] == 1800
    workshops.set_hand(rows["Ada"], True)
    snap = selectors.cockpit(workshop, now=now)
    assert [r["name"] for r in snap["learners"]] == ["Ada", "Ben", "Cy"]
    assert snap["counts"] == {"learners": 3, "online": 3, "hands": 1, "sandboxes": 0,
                              "passes": 0, "failures": 0}
    # Among learners whose page is open: Ben closed his, so Cy is the one to visit.
    Participant.objects.filter(pk=rows["Ben"].pk).update(open_pages=0)
    assert selectors.cockpit(workshop, now=now)["stuck_longest"]["name"] == "Cy"


def test_learner_page_shows_only_their_own_work(workshop):
    ada, _ = workshops.join(workshop=workshop, learner_key="session:a", display_name="Ada")
    workshops.join(workshop=workshop, learner_key="session:b", display_name="Ben")
    page = selectors.learner_page(ada)
    assert page["me"]["name"] == "Ada"
    assert "Ben" not in str(page)


def test_csv_neutralises_formulas_in_names(workshop):
    workshops.join(workshop=workshop, learner_key="session:a", display_name="=HYPERLINK(1)")
    workshops.join(workshop=workshop, learner_key="session:b", display_name="Ben")
    lines = selectors.csv_text(workshop).splitlines()
    assert lines[0].startswith("display_name,joined_at")
    assert lines[1].startswith("'=HYPERLINK(1)") and lines[2].startswith("Ben,")


def test_learner_key_spellings():
    assert identity.variants("session:abc") == ["session:abc", "s:abc"]
    assert identity.variants("u:7") == ["u:7", "user:7"]
    assert identity.variants("odd") == ["odd"]
    # The labs' own helper decides how they spell a learner.
    from labs.services.runs import learner_key as labs_learner_key
    from types import SimpleNamespace
    expected = labs_learner_key(SimpleNamespace(
        user=SimpleNamespace(is_authenticated=False), session=SimpleNamespace(session_key="abc")))
    assert identity.labs_key("session:abc") == expected
