"""Every case of the broken-input corpus (tests/corpus/README.md) under every policy of `check_dataset`."""
import json
from pathlib import Path
import numpy as np
import pytest
from visionnb.core import DatasetError
from visionnb.data.core import Records, load_image
from visionnb.data.check import check_dataset, policy_action, FINDING_KINDS
from visionnb.data.coco import coco_records
from visionnb.data.voc import voc_records

CORPUS = Path(__file__).parent/'corpus'
CLASSES = ['circle', 'square']
BCCD = Path(__file__).parents[2]/'shared'/'datasets'/'bccd'
ALL = ['object 0 (circle)', 'object 1 (square)']
SKIPPED = None   # the image is dropped

# case -> (finding kinds, objects kept under 'fix', objects kept under 'skip'), as in tests/corpus/README.md
VOC_CASES = {
    'clean':          ([], ALL, ALL),
    'truncated':      (['truncated-image'], SKIPPED, SKIPPED),
    'empty':          (['empty-image'], SKIPPED, SKIPPED),
    'missing':        (['missing-image'], SKIPPED, SKIPPED),
    'wrong_ext':      (['wrong-extension'], ALL, ALL),
    'no_size':        (['missing-size'], ALL, SKIPPED),
    'size_mismatch':  (['size-mismatch'], SKIPPED, SKIPPED),
    'outside':        (['box-partly-outside', 'box-outside-image'], ALL, ALL[:1]),
    'inverted':       (['inverted-box'], ALL, ALL[:1]),
    'degenerate':     (['degenerate-box'], ALL[:1], ALL[:1]),
    'unknown_class':  (['unknown-class'], ALL[:1], ALL[:1]),
    'grayscale':      (['grayscale-image'], ALL, ALL),
    'rgba':           (['alpha-image'], ALL, ALL),
    'gray16':         (['high-bit-depth-image'], ALL, ALL),
    'palette':        (['palette-image'], ALL, ALL),
    'exif_rotated':   (['exif-rotated'], ALL[:1], ALL[:1]),
    'exif_raw_frame': (['exif-rotated', 'exif-frame'], ALL[:1], SKIPPED),
    'negative':       (['no-objects'], [], []),
    'bad_box':        (['read-error'], ALL[:1], ALL[:1]),
}
POLICIES = ['raise', 'fix', 'skip']

@pytest.fixture(scope='module')
def voc():
    return voc_records(CORPUS/'voc', classes=CLASSES)

@pytest.fixture(scope='module')
def coco():
    return coco_records(CORPUS/'coco'/'annotations.json', img_dir=CORPUS/'coco'/'images')

def one_case(records, case) -> Records:
    "The records of one corpus case: its image, alone."
    (rec,) = [r for r in records if Path(r.source).stem == case]
    return Records([rec], records.vocab)

def check_accounting(records, clean, report):
    "No silent drop: every image and object that went is a finding; every finding follows the policy table."
    c = report.counts
    assert (c['images_in'], c['objects_in']) == (len(records), records.num_objects)
    assert (c['images_out'], c['objects_out']) == (len(clean), clean.num_objects)
    skipped_images = [f for f in report if f.action == 'skipped-image']
    assert len(records) == len(clean) + len(skipped_images)
    assert records.num_objects == clean.num_objects + c['objects_skipped'] + c['objects_in_skipped_images']
    assert c['objects_skipped'] == sum(f.action == 'skipped-object' for f in report)
    # the objects that went with skipped images are those of the records the report names
    gone = [r for r in records if not any((o.file, o.image_id) == (r.file, r.image_id) for o in clean)]
    assert c['objects_in_skipped_images'] == sum(len(r) for r in gone)
    for f in report:
        assert f.action == policy_action(f.kind, report.policy)
        assert f.file and f.kind in FINDING_KINDS
    assert all(r.read_errors == [] for r in clean)
    json.dumps(report.as_dict())

@pytest.mark.parametrize('policy', POLICIES)
@pytest.mark.parametrize('case', VOC_CASES)
def test_voc_case(voc, case, policy):
    records = one_case(voc, case)
    kinds, kept_fix, kept_skip = VOC_CASES[case]
    errors = [k for k in kinds if FINDING_KINDS[k].severity == 'error']
    if policy == 'raise' and errors:
        with pytest.raises(DatasetError) as info:
            check_dataset(records, policy=policy)
        message, report = str(info.value), info.value.report
        assert f'{case}.' in message, "the message names the file"
        assert "policy='fix'" in message and "policy='skip'" in message, "the message says how to go on"
        assert sorted(f.kind for f in report) == sorted(kinds)
        assert all(f.action == ('raised' if f.severity == 'error' else 'kept') for f in report)
        return
    clean, report = check_dataset(records, policy=policy)
    assert sorted(f.kind for f in report) == sorted(kinds)
    assert all(f.image == str(records[0].file) and (case in Path(f.file).stem) for f in report), "each finding names its file"
    check_accounting(records, clean, report)
    kept = {'raise': records[0].ann_ids, 'fix': kept_fix, 'skip': kept_skip}[policy]
    if kept is SKIPPED:
        assert len(clean) == 0 and [f.action for f in report if f.severity == 'error'] == ['skipped-image']
    else:
        assert len(clean) == 1 and clean[0].ann_ids == kept
        assert sum(f.action == 'skipped-object' for f in report) == len(records[0]) - len(kept)

def kept_boxes(voc, case, policy='fix'):
    clean, _ = check_dataset(one_case(voc, case), policy=policy)
    return clean[0]

def test_fixes_repair_exactly(voc):
    "What `fix` does to the boxes (VOC corners are 1-based, so the reader's boxes start one pixel lower)."
    original = {case: one_case(voc, case)[0] for case in VOC_CASES}
    np.testing.assert_array_equal(kept_boxes(voc, 'outside').boxes[1], [19, 9, 32, 24])       # clipped to 32x24
    np.testing.assert_array_equal(kept_boxes(voc, 'inverted').boxes[1], [18, 7, 29, 20])      # corners swapped
    assert kept_boxes(voc, 'no_size').size == (24, 32)                                        # from the image header
    assert original['no_size'].size == (None, None), "the input records are untouched"
    np.testing.assert_array_equal(original['inverted'].boxes[1], [29, 7, 18, 20])
    # the boxes drawn on the stored pixels, rotated, are the boxes drawn on the displayed image
    rotated, displayed = kept_boxes(voc, 'exif_raw_frame'), kept_boxes(voc, 'exif_rotated')
    assert rotated.size == displayed.size == (32, 24)
    np.testing.assert_array_equal(rotated.boxes, displayed.boxes)
    x1, y1, x2, y2 = rotated.boxes[0].astype(int)
    pixels = np.asarray(load_image(rotated.file)).mean(-1)
    assert pixels[y1:y2, x1:x2].min() > 200 > pixels.mean(), "the box covers the white patch of the picture"
    assert kept_boxes(voc, 'unknown_class').labels.tolist() == [0]

def test_voc_missing_xml_is_reported(voc):
    "An id listed in the split without an XML file is a reader error of the dataset, counted as a skipped entry."
    records = Records([], voc.vocab, voc.read_errors)
    assert [(Path(f).name, e) for f, e, _ in voc.read_errors] == [('trainval.txt', 'no_xml')]
    with pytest.raises(DatasetError, match='no_xml'):
        check_dataset(records)
    for policy in ['fix', 'skip']:
        _, report = check_dataset(records, policy=policy)
        assert [(f.kind, f.entry, f.action) for f in report] == [('read-error', 'no_xml', 'skipped-entry')]
        assert report.counts['entries_skipped'] == 1

def test_voc_unparseable_xml_stops_the_reader():
    "A cut-off XML cannot be read at all: `voc_records` raises, naming the file, before any policy applies."
    with pytest.raises(DatasetError, match='bad_xml.xml: not valid XML'):
        voc_records(CORPUS/'voc', 'unparseable', classes=CLASSES)

# COCO: the findings, as (image, kind, entry), and the images kept with their annotation ids: the same under 'fix' and 'skip'
COCO_FINDINGS = [('b.jpg', 'no-objects', 'image id=2'),
                 ('c.jpg', 'read-error', 'image id=2'), ('c.jpg', 'duplicate-image-id', 'image id=2'),
                 ('a.jpg', 'duplicate-file', 'image id=3'),
                 ('d.jpg', 'duplicate-annotation-id', 'annotation id=2'), ('d.jpg', 'unknown-class', 'annotation id=5'),
                 ('d.jpg', 'no-objects', 'image id=4')]
COCO_KEPT = [('a.jpg', 1, [1, 2]), ('b.jpg', 2, []), ('d.jpg', 4, [])]

def test_coco_raise(coco):
    with pytest.raises(DatasetError) as info:
        check_dataset(coco)
    message, report = str(info.value), info.value.report
    errors = [(Path(f.image).name, f.kind, f.entry) for f in report if f.severity == 'error']
    assert errors == [f for f in COCO_FINDINGS if f[1] != 'no-objects']
    for _, kind, entry in errors: assert f'annotations.json [{entry}]: {kind}' in message

@pytest.mark.parametrize('policy', ['fix', 'skip'])
def test_coco_cases(coco, policy):
    clean, report = check_dataset(coco, policy=policy)
    check_accounting(coco, clean, report)
    assert [(Path(f.image).name, f.kind, f.entry) for f in report] == COCO_FINDINGS
    assert [(r.file.name, r.image_id, r.ann_ids) for r in clean] == COCO_KEPT
    assert all(Path(f.file).name == 'annotations.json' for f in report), "annotation problems name the json"

@pytest.mark.parametrize('policy', POLICIES)
def test_whole_corpus(voc, coco, policy):
    "All cases together, with and without opening images: no crash, no silent drop."
    for records in [voc, coco]:
        for check_images in [True, False]:
            try: clean, report = check_dataset(records, policy=policy, check_images=check_images)
            except DatasetError as e:
                assert policy == 'raise' and not e.report.ok
                continue
            check_accounting(records, clean, report)

def test_bccd_degenerate_boxes():
    if not BCCD.exists(): pytest.skip(f'BCCD not found at {BCCD}')
    records = voc_records(BCCD)
    clean, report = check_dataset(records, policy='skip', check_images=False)
    assert [(Path(f.file).name, f.entry, f.action) for f in report if f.severity == 'error'] == [
        ('BloodImage_00338.xml', 'object 12 (RBC)', 'skipped-object'), ('BloodImage_00343.xml', 'object 3 (RBC)', 'skipped-object')]
    assert {f.kind for f in report} == {'degenerate-box'}
    assert (len(clean), clean.num_objects) == (len(records), records.num_objects - 2)
