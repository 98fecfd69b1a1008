"""Every case of the broken-input corpus (tests/corpus/README.md) under every policy of `check_dataset`."""
import json
from pathlib import Path
import numpy as np
import pytest
from visionnb.core import DatasetError
from visionnb.data.core import Records, image_size, load_image
from visionnb.data.check import check_dataset, policy_action, FINDING_KINDS
from visionnb.data.coco import coco_records
from visionnb.data.loaders import det_dls, object_counts
from visionnb.data.voc import voc_records
from visionnb.data.yolo import yolo_records

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
    'inf_width':      (['read-error', 'missing-size'], ALL, SKIPPED),
    'duplicate_object': (['duplicate-object'], ALL, ALL),
    'tiny':           ([], ALL, ALL),
}
LINES = ['line 1', 'line 2']
YOLO_CASES = {
    'clean':          ([], LINES, LINES),
    'inf_line':       (['read-error'], LINES[:1], LINES[:1]),
    'unknown_class':  (['unknown-class'], LINES[:1], LINES[:1]),
    'negative':       (['no-objects'], [], []),
    'missing_label':  (['missing-label-file'], [], []),
    'bomb':           (['read-error', 'unreadable-image'], SKIPPED, SKIPPED),
}
POLICIES = ['raise', 'fix', 'skip']

@pytest.fixture(scope='module')
def voc():
    return voc_records(CORPUS/'voc', classes=CLASSES)

@pytest.fixture(scope='module')
def yolo():
    return yolo_records(CORPUS/'yolo'/'images', classes=CLASSES)

@pytest.fixture(scope='module')
def coco():
    return coco_records(CORPUS/'coco'/'annotations.json', img_dir=CORPUS/'coco'/'images')

def one_case(records, case) -> Records:
    "The records of one corpus case: its image, alone."
    (rec,) = [r for r in records if Path(r.source).stem == case]
    return Records([rec], records.vocab)

def one(xs):
    "The only element of `xs`."
    (x,) = xs
    return x

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

def check_case(records, case, cases, policy):
    "One corpus case under one policy: the findings of `cases[case]`, raised or acted on as the policy table says."
    records = one_case(records, case)
    kinds, kept_fix, kept_skip = cases[case]
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
        assert len(clean) == 0 and report.counts['images_skipped'] == 1
    else:
        assert len(clean) == 1 and clean[0].ann_ids == kept
        assert sum(f.action == 'skipped-object' for f in report) == len(records[0]) - len(kept)

@pytest.mark.parametrize('policy', POLICIES)
@pytest.mark.parametrize('case', VOC_CASES)
def test_voc_case(voc, case, policy): check_case(voc, case, VOC_CASES, policy)

@pytest.mark.parametrize('policy', POLICIES)
@pytest.mark.parametrize('case', YOLO_CASES)
def test_yolo_case(yolo, case, policy): check_case(yolo, case, YOLO_CASES, policy)

def kept_boxes(voc, case, policy='fix'):
    clean, _ = check_dataset(one_case(voc, case), policy=policy)
    return clean[0]

def test_fixes_repair_exactly(voc):
    "What `fix` does to the boxes (VOC corners are 1-based and inclusive: the reader's boxes start one pixel lower)."
    original = {case: one_case(voc, case)[0] for case in VOC_CASES}
    np.testing.assert_array_equal(kept_boxes(voc, 'outside').boxes[1], [19, 9, 32, 24])       # clipped to 32x24
    # (30, 8, 18, 20) covers pixel columns 18..30: edges 17..30, as (18, 8, 30, 20) gives once read
    np.testing.assert_array_equal(kept_boxes(voc, 'inverted').boxes[1], [17, 7, 30, 20])      # corners swapped: the true box
    np.testing.assert_array_equal(kept_boxes(voc, 'inverted').boxes[1], original['clean'].boxes[1])
    assert kept_boxes(voc, 'no_size').size == (24, 32)                                        # from the image header
    assert kept_boxes(voc, 'inf_width').size == (24, 32)
    assert original['no_size'].size == (None, None), "the input records are untouched"
    np.testing.assert_array_equal(original['inverted'].boxes[1], [30, 7, 17, 20])
    # the boxes drawn on the stored pixels, rotated, are the boxes drawn on the displayed image
    rotated, displayed = kept_boxes(voc, 'exif_raw_frame'), kept_boxes(voc, 'exif_rotated')
    assert rotated.size == displayed.size == (32, 24)
    np.testing.assert_array_equal(rotated.boxes, displayed.boxes)
    x1, y1, x2, y2 = rotated.boxes[0].astype(int)
    pixels = np.asarray(load_image(rotated.file)).mean(-1)
    assert pixels[y1:y2, x1:x2].min() > 200 > pixels.mean(), "the box covers the white patch of the picture"
    assert kept_boxes(voc, 'unknown_class').labels.tolist() == [0]

def check_dataset_errors(records, expected):
    "Reader errors of the dataset (`expected`: their file names and entries) raise under 'raise' and are skipped entries under 'fix' and 'skip'."
    assert [(Path(f).name, e) for f, e, _ in records.read_errors] == expected
    entries = Records([], records.vocab, records.read_errors)
    with pytest.raises(DatasetError) as info:
        check_dataset(entries)
    for name, entry in expected:   # each listed as `file [entry]: read-error`, or `file: read-error` without an entry
        assert (f'{name} [{entry}]: read-error' if entry else f'{name}: read-error') in str(info.value)
    for policy in ['fix', 'skip']:
        _, report = check_dataset(entries, policy=policy)
        assert [(Path(f.file).name, f.entry, f.kind, f.action) for f in report] == [(*e, 'read-error', 'skipped-entry') for e in expected]
        assert report.counts['entries_skipped'] == len(expected)

def test_voc_unreadable_entries_are_reported(voc):
    "An XML cut off mid-element and an id listed without an XML are reader errors of the dataset: the other files are read."
    check_dataset_errors(voc, [('bad_xml.xml', None), ('trainval.txt', 'no_xml')])
    assert voc.read_errors[0][2].startswith('not valid XML (ParseError: ')

def test_yolo_unreadable_label_file_is_reported(yolo):
    "A label file with a byte that is not UTF-8 is a reader error; its image is left out, not read as an image without objects."
    check_dataset_errors(yolo, [('non_utf8.txt', None)])
    assert 'UnicodeDecodeError' in yolo.read_errors[0][2] and 'UTF-8 text' in yolo.read_errors[0][2]
    assert 'non_utf8' not in {r.file.stem for r in yolo}

@pytest.mark.parametrize('reader', ['voc', 'yolo'])
def test_fix_keeps_every_good_image(voc, yolo, reader):
    "With broken files beside them, `fix` keeps every image whose case it can repair or keep, and counts the rest."
    records, cases = (voc, VOC_CASES) if reader == 'voc' else (yolo, YOLO_CASES)
    clean, report = check_dataset(records, policy='fix')
    assert sorted(r.file.stem for r in clean) == sorted(case for case, (_, kept, _) in cases.items() if kept is not SKIPPED)
    assert report.counts['entries_skipped'] == len(records.read_errors) + sum(len(r.read_errors) for r in records)

def test_yolo_without_label_files():
    "A YOLO folder where no image has a label file is an error naming the folder looked in and the layouts that work."
    with pytest.raises(DatasetError, match=r'yolo_nolabels/labels: none of the 1 images .* has a label file') as info:
        yolo_records(CORPUS/'yolo_nolabels'/'images', classes=CLASSES)
    assert '--img-dir' in str(info.value) and 'dataset/labels/<split>' in str(info.value)
    assert Path(info.value.file) == CORPUS/'yolo_nolabels'/'labels'

def test_decompression_bomb_is_a_dataset_error():
    "A PNG whose header claims 30000 x 30000 pixels: `load_image` (predict, export) and `image_size` raise a DatasetError naming it."
    bomb = CORPUS/'yolo'/'images'/'bomb.png'
    assert bomb.stat().st_size < 100
    for read in [load_image, image_size]:
        with pytest.raises(DatasetError, match='bomb.png: not an image file that can be read \\(DecompressionBombError'):
            read(bomb)

def test_messages_name_what_the_file_says(voc, coco, yolo):
    "Unknown classes are named as the file writes them; a duplicate names its first copy; a read error says how to fix it."
    message = lambda records, case, kind: one(check_dataset(one_case(records, case), policy='skip')[1].of(kind)).message
    assert message(voc, 'unknown_class', 'unknown-class') == "class 'triangle' is not in the vocab ['circle', 'square']"
    assert message(yolo, 'unknown_class', 'unknown-class') == "class 5 is not in the vocab ['circle', 'square']"
    assert message(voc, 'duplicate_object', 'duplicate-object') == 'the same class and box [4, 4, 14, 12] as object 0 (circle)'
    assert message(yolo, 'inf_line', 'read-error') == 'class inf is not an integer. Write `class cx cy w h` (or `class x1 y1 x2 y2 ...`) with an integer class and coordinates in 0..1'
    _, report = check_dataset(coco, policy='skip')
    assert one(report.of('unknown-class')).message == 'category_id 7 is not in `categories`'
    assert {f.entry: f.message.split('. ')[0] for f in report.of('read-error')} == {
        'images[6]': '`id` is [6], not an integer or a string', 'images[7]': '`file_name` is None: missing or not a string',
        'annotation id=8': 'its image, images[7], could not be read', 'annotation id=7': '`category_id` is [1], not an integer or a string',
        'image id=2': 'image id used twice; its annotations went to the first image with this id',
        'image id=5': '`width` is inf, not a positive number of pixels'}

def test_dropped_objects_are_counted(voc):
    "Every object `check_dataset` keeps is in a batch or counted as dropped (`tiny`'s 2 px box at 12 px), also from worker processes."
    clean, report = check_dataset(voc, policy='fix')
    for workers in (0, 2):
        dls = det_dls(clean, clean, size=12, bs=len(clean), num_workers=workers, scale=(1, 1), crop=False, flip=0, color=False)
        served = sum(len(t['boxes']) for _, targets in dls.train for t in targets)
        counts = object_counts(dls)['train']
        assert (counts['passes'], counts['images'], counts['objects'], counts['dropped']) == (1, len(clean), served, 1)
        assert served + counts['dropped'] == report.counts['objects_out']

# COCO: the findings, as (image, kind, entry), and the images kept with their annotation ids under 'fix' and 'skip'
COCO_FINDINGS = [('', 'read-error', 'images[6]'), ('', 'read-error', 'images[7]'), ('', 'read-error', 'annotation id=8'),
                 ('a.jpg', 'read-error', 'annotation id=7'),
                 ('b.jpg', 'no-objects', 'image id=2'),
                 ('c.jpg', 'read-error', 'image id=2'), ('c.jpg', 'duplicate-image-id', 'image id=2'),
                 ('a.jpg', 'duplicate-file', 'image id=3'),
                 ('d.jpg', 'duplicate-annotation-id', 'annotation id=2'), ('d.jpg', 'unknown-class', 'annotation id=5'),
                 ('d.jpg', 'no-objects', 'image id=4'),
                 ('e.jpg', 'read-error', 'image id=5'), ('e.jpg', 'missing-size', 'image id=5')]
COCO_KEPT_BOTH = [('a.jpg', 1, [1, 2]), ('b.jpg', 2, []), ('d.jpg', 4, [])]
COCO_KEPT = {'fix': COCO_KEPT_BOTH + [('e.jpg', 5, [6])], 'skip': COCO_KEPT_BOTH}   # fix fills e.jpg's size from its header

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
    assert [(r.file.name, r.image_id, r.ann_ids) for r in clean] == COCO_KEPT[policy]
    assert all(Path(f.file).name == 'annotations.json' for f in report), "annotation problems name the json"

@pytest.mark.parametrize('policy', POLICIES)
def test_whole_corpus(voc, coco, yolo, policy):
    "All cases together, with and without opening images: no crash, no silent drop."
    for records in [voc, coco, yolo]:
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
