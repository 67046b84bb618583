"""The local FerretDB finds documents by `_id` through an index.

FerretDB 1.24 on SQLite compares `_id` with an expression its own `_id` index
does not match, so without the devstack's extra index every Get miss, Upsert
and lookup by id scanned the collection (see FerretDBProcess.index_ids).
"""

from __future__ import annotations

import pymongo
from bson import ObjectId

from movieservice.devstack.processes import FerretDBProcess
from tests.support.ferretdb import id_lookup_plans


def test_every_seeded_collection_is_searched_by_id_not_scanned(mongo_process: FerretDBProcess, seeded: str):
    plans = id_lookup_plans(mongo_process.data_dir, seeded)
    for name in ("movies", "theaters"):  # not collections that tests create later
        assert "USING INDEX" in plans[name] and "movieservice_id_lookup" in plans[name], f"{name}: {plans[name]}"


def test_collections_created_later_are_indexed_on_the_next_call(mongo_process: FerretDBProcess, mongo_url: str):
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_url)
    try:
        collection = client["index_later"]["things"]
        ids = [ObjectId() for _ in range(3)]
        collection.insert_many([{"_id": i, "n": n} for n, i in enumerate(ids)])
        assert "SCAN" in id_lookup_plans(mongo_process.data_dir, "index_later")["things"]

        assert mongo_process.index_ids() >= 1  # other tests may have created collections too
        assert mongo_process.index_ids() == 0
        assert "USING INDEX" in id_lookup_plans(mongo_process.data_dir, "index_later")["things"]

        # FerretDB answers through the index as before: finds, updates, upserts.
        assert collection.find_one({"_id": ids[2]}) == {"_id": ids[2], "n": 2}
        before = collection.find_one_and_update({"_id": ids[1]}, {"$inc": {"n": 10}})
        assert before == {"_id": ids[1], "n": 1}
        assert collection.find_one({"_id": ids[1]}) == {"_id": ids[1], "n": 11}
        created = ObjectId()
        collection.update_one({"_id": created}, {"$set": {"n": 7}}, upsert=True)
        assert collection.find_one({"_id": created}) == {"_id": created, "n": 7}
        assert collection.count_documents({}) == 4
    finally:
        client.drop_database("index_later")
        client.close()
