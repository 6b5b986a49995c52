from helpers import SleepDataset, plot_swimlanes, run_experiment
from helpers.plotting import COLORS, lanes


def test_chart_has_a_lane_per_process_a_legend_and_time_since_iter() -> None:
    trace = run_experiment(SleepDataset(8, delay=0.01), batch_size=2, num_workers=3, start_method="fork")
    fig = plot_swimlanes(trace)
    ax = fig.axes[0]
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    assert (
        labels == ["main", "worker 0", "worker 1", "worker 2"] == [l.split("\n")[0] for _, l in lanes(trace)]
    )
    assert ax.get_xlabel() == "seconds since iter()"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "worker process starts" in legend and "collate (batch no.)" in legend
    assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]
    facecolors = {tuple(round(c, 3) for c in coll.get_facecolor()[0]) for coll in ax.collections}
    assert len(facecolors) >= 4
    assert COLORS["item"].lower() == "#0072b2"
