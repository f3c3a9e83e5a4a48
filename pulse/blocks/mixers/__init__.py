"""Other sequence mixers: linear attention, sparse state attention, selective SSM, NTM memory."""
