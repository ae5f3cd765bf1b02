"""The migrations build exactly the schema the models describe."""

import json

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from dockyard.db.migrate import upgrade
from dockyard.db.models import Base


def test_migrations_match_models(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_gpu_sharing_migration_keeps_what_each_gpu_held(tmp_path):
    """Before 0015 an assignment named a GPU; after, the GPU's one slot."""
    from alembic import command
    from sqlalchemy import text

    from dockyard.db.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0009")
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # only the rows this test looks at
        connection.execute(text("INSERT INTO gpus (id, node_name, \"index\", uuid, model, memory_mb, simulated, present) "
                                "VALUES (7, 'local', 0, 'GPU-a', 'A100', 40960, 1, 1), "
                                "(8, 'local', 1, 'GPU-b', 'A100', 40960, 1, 1)"))
        connection.execute(text("INSERT INTO gpu_assignments (gpu_id, instance_id, assigned_at) "
                                "VALUES (7, 'i1', '2026-12-01 00:00:00')"))
        connection.commit()
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
        slots = connection.execute(text("SELECT id, gpu_id, slot FROM gpu_slots ORDER BY gpu_id")).all()
        assert [(gpu, slot) for _, gpu, slot in slots] == [(7, 0), (8, 0)]
        held = connection.execute(text("SELECT slot_id, gpu_id, instance_id FROM gpu_assignments")).all()
        assert held == [(slots[0][0], 7, "i1")]
        assert connection.execute(text("SELECT sharing FROM gpus")).scalars().all() == [None, None]
        command.downgrade(alembic_config(connection), "0009")
        assert connection.execute(text("SELECT gpu_id, instance_id FROM gpu_assignments")).all() == [(7, "i1")]


def test_backend_state_migration_keeps_each_instance_s_container_gpus_and_system_disk(tmp_path):
    """Before 0019 the GPUs a container was made with and the kept system disk were two
    columns; after, the runtime's one `backend_state`, which the container joins at 0020.
    Down again, the columns come back."""
    from alembic import command
    from sqlalchemy import text

    from dockyard.db.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    columns = ("id, owner_id, name, node_name, image_id, gpu_model, gpu_count, status, no_gpu, env, data_disk_gb, "
               "gpu_milli, created_at, updated_at, container_id, container_gpus, sysdisk_image")
    common = "'local', 1, 'A100', 2, 'stopped', 0, '{}', 50, 2000, '2026-12-01', '2026-12-01'"
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0018")
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # only the rows this test looks at
        connection.execute(text(f"INSERT INTO instances ({columns}) VALUES "
                                f"('i1', 1, 'one', {common}, 'c1', '[\"GPU-b\", \"GPU-a\"]', NULL), "
                                f"('i2', 1, 'two', {common}, NULL, '[]', 'dy-x-sysdisk:i2-1')"))
        connection.commit()
        command.upgrade(alembic_config(connection), "0019")
        connection.commit()
        rows = connection.execute(text("SELECT id, container_id, backend_state FROM instances ORDER BY id")).all()
        assert [(i, c, json.loads(s)) for i, c, s in rows] == [
            ("i1", "c1", {"gpus": ["GPU-a", "GPU-b"], "system_disk": None}),
            ("i2", None, {"gpus": [], "system_disk": "dy-x-sysdisk:i2-1"})]
        # 0020: the container joins the rest in backend_state, and leaves it again going down.
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
        rows = connection.execute(text("SELECT id, backend_state FROM instances ORDER BY id")).all()
        assert [(i, json.loads(s)) for i, s in rows] == [
            ("i1", {"container": "c1", "gpus": ["GPU-a", "GPU-b"], "system_disk": None}),
            ("i2", {"container": None, "gpus": [], "system_disk": "dy-x-sysdisk:i2-1"})]
        command.downgrade(alembic_config(connection), "0019")
        rows = connection.execute(text("SELECT id, container_id, backend_state FROM instances ORDER BY id")).all()
        assert [(i, c, json.loads(s)) for i, c, s in rows] == [
            ("i1", "c1", {"gpus": ["GPU-a", "GPU-b"], "system_disk": None}),
            ("i2", None, {"gpus": [], "system_disk": "dy-x-sysdisk:i2-1"})]
        command.downgrade(alembic_config(connection), "0018")
        rows = connection.execute(text("SELECT id, container_gpus, sysdisk_image FROM instances ORDER BY id")).all()
        assert [(i, json.loads(g), d) for i, g, d in rows] == [("i1", ["GPU-a", "GPU-b"], None),
                                                                ("i2", [], "dy-x-sysdisk:i2-1")]


def test_with_gpus_is_filled_in_on_the_running_events_written_before_it(tmp_path):
    """0021: a '-> running' event from before 0018 gets `with_gpus` from the driver's cause,
    else from its instance's no_gpu; other events, and those that have it, are left alone."""
    from alembic import command
    from sqlalchemy import text

    from dockyard.db.migrate import alembic_config

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    columns = ("id, owner_id, name, node_name, image_id, gpu_model, gpu_count, status, no_gpu, env, data_disk_gb, "
               "gpu_milli, created_at, updated_at, backend_state")
    common = "'local', 1, 'A100', 2, 'stopped', {}, '{{}}', 50, 2000, '2026-12-01', '2026-12-01', '{{}}'"
    events = [  # instance, to_status, cause, with_gpus before, after
        ("i1", "running", "container started with GPUs 0,1", None, True),
        ("i1", "running", "container started without GPUs", None, False),
        ("i1", "running", "started", None, True),  # i1 has GPUs
        ("i2", "running", "started", None, False),  # i2 is no-GPU
        ("i2", "running", "container started with GPUs 0", False, False),  # recorded: kept
        ("i1", "stopped", "stopped", None, None),
    ]
    with engine.connect() as connection:
        command.upgrade(alembic_config(connection), "0020")
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # only the rows this test looks at
        connection.execute(text(f"INSERT INTO instances ({columns}) VALUES ('i1', 1, 'one', {common.format(0)}), "
                                f"('i2', 1, 'two', {common.format(1)})"))
        for n, (instance, status, cause, before, _) in enumerate(events, 1):
            connection.execute(text("INSERT INTO instance_events (id, instance_id, at, to_status, cause, with_gpus) "
                                    "VALUES (:id, :i, '2026-12-01', :s, :c, :w)"),
                               {"id": n, "i": instance, "s": status, "c": cause, "w": before})
        connection.commit()
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
        found = connection.execute(text("SELECT with_gpus FROM instance_events ORDER BY id")).scalars().all()
        assert [None if v is None else bool(v) for v in found] == [after for *_, after in events]


def _test_engine(tmp_path):
    """SQLite in tmp_path, or a new database on the PostgreSQL that DOCKYARD_TEST_DB names."""
    from tests.harness import test_database_url

    return create_engine(test_database_url(tmp_path))


def test_every_migration_goes_down_and_up_again(tmp_path):
    """Each step down and up leaves the schema the models describe: an operator can roll a
    release back (`alembic downgrade`) and forward again on SQLite and on PostgreSQL."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from dockyard.db.migrate import alembic_config

    engine = _test_engine(tmp_path)
    with engine.connect() as connection:
        config = alembic_config(connection)
        revisions = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions("base", "heads")]
        command.upgrade(config, "head")
        for revision in revisions:  # newest first: down one step, up again, down for good
            command.downgrade(config, "-1")
            command.upgrade(config, revision)
            command.downgrade(config, "-1")
        assert MigrationContext.configure(connection).get_current_revision() is None
        command.upgrade(config, "head")
        connection.commit()
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
