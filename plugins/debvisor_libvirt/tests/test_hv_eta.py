"""The migration ETA model (migrate.EtaModel) on job statistics shaped like QEMU's: the
sampled non-zero share applies to the guest RAM it was sampled from, not to QEMU's other
RAM blocks; the first pass is not slowed by the dirty rate; later passes are."""

from __future__ import annotations

from debvisor_libvirt.migrate import ZERO_PAGE_COST, EtaModel

MIB = 2**20
RAM = 256 * MIB  # the guest's RAM
TOTAL = RAM + 16 * MIB + 512 * 1024  # what QEMU's memory_total counts: + video RAM, ROMs
PAGE = 4096


def _sample(**over: float) -> dict[str, float]:
    s = {"type": 2, "memory_total": TOTAL, "data_total": TOTAL, "memory_page_size": PAGE,
         "memory_bps": 16 * MIB, "memory_iteration": 1}
    s.update(over)
    return s


def test_the_share_counts_only_the_guest_ram_it_was_sampled_from() -> None:
    share, sent = 0.3, 30 * MIB
    remaining = TOTAL // 2
    point = EtaModel(share, 0.0, finish_s=0.0, ram_bytes=RAM).point(_sample(
        memory_remaining=remaining, data_remaining=remaining, memory_normal_bytes=sent))
    assert point is not None
    zero_pages = (1 - share) * remaining / PAGE * ZERO_PAGE_COST
    assert point["to_send"] == int(share * RAM - sent + zero_pages)
    assert abs(point["eta_s"] - point["to_send"] / (16 * MIB)) < 1e-6  # to_send is whole bytes
    # without the guest's size, the whole of QEMU's total: more to send, a later ETA
    old = EtaModel(share, 0.0, finish_s=0.0).point(_sample(
        memory_remaining=remaining, data_remaining=remaining, memory_normal_bytes=sent))
    assert old is not None
    assert abs(old["to_send"] - point["to_send"] - share * (TOTAL - RAM)) <= 1  # whole bytes


def test_the_first_pass_resends_a_working_set_later_passes_race_the_dirty_rate() -> None:
    dirty = 2 * MIB
    first = EtaModel(0.3, dirty, finish_s=1.5, ram_bytes=RAM).point(_sample(
        memory_remaining=TOTAL // 2, data_remaining=TOTAL // 2, memory_normal_bytes=30 * MIB))
    assert first is not None
    t1 = first["to_send"] / (16 * MIB)
    assert abs(first["eta_s"] - (t1 + dirty * min(t1, 1) / (16 * MIB) + 1.5)) < 1e-6  # to_send is whole bytes
    later = EtaModel(0.3, dirty, finish_s=1.5, ram_bytes=RAM).point(_sample(
        memory_iteration=2, memory_remaining=8 * MIB, data_remaining=8 * MIB,
        memory_dirty_rate=dirty / PAGE))
    assert later is not None
    assert abs(later["eta_s"] - (8 * MIB / (16 * MIB - dirty) + 1.5)) < 1e-6  # to_send is whole bytes
    assert later["eta_to"] == "end"
    unknown = EtaModel(0.3, dirty, finish_s=None, ram_bytes=RAM).point(_sample(
        memory_remaining=TOTAL // 2, data_remaining=TOTAL // 2, memory_normal_bytes=30 * MIB))
    assert unknown is not None and unknown["eta_to"] == "switch-over"
